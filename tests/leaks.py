"""The forms a secret can take in text (the output of a playbook, a log, a run's artifacts), so
that a test can look for all of them: a dropped `no_log` shows the value raw or JSON-escaped
(module arguments and results), and `slurp` returns a file's content base64-encoded, often with
more of the file around it."""

from __future__ import annotations

import base64
import json

# Shorter forms would match by chance in a long output.
MIN_SECRET_LENGTH = 16


def secret_forms(secret: str) -> dict[str, str]:
    """name -> text of every form of `secret`: raw, JSON-escaped, base64 at each of the 3
    alignments it can have inside a larger encoded file, and, for a multi-line secret (a
    private key), each of its lines (a YAML block scalar indents them), the PEM armor aside."""
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(f"a secret of {len(secret)} characters is too short to look for")
    raw = secret.encode()
    forms = {"raw": secret, "JSON-escaped": json.dumps(secret)[1:-1]}
    for offset in range(3):
        forms[f"base64 at offset {offset}"] = _base64_inside(raw, offset)
    lines = secret.splitlines()
    if len(lines) > 1:
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if len(line) >= MIN_SECRET_LENGTH and not line.startswith("-----"):
                forms[f"line {number}"] = line
    return forms


def _base64_inside(raw: bytes, offset: int) -> str:
    """The base64 characters that encode only bytes of `raw`, when `raw` starts `offset` bytes
    (mod 3) into the encoded data: the same whatever comes before or after it. A group of 3
    input bytes gives 4 characters; groups that mix in bytes around `raw` are left out."""
    encoded = base64.b64encode(b"\0" * offset + raw).decode()
    first = 1 if offset else 0  # the first whole group of raw's own bytes
    end = (offset + len(raw)) // 3  # groups before this one are whole
    return encoded[4 * first:4 * end]


def find_leaks(text: str, secrets: dict[str, str]) -> list[str]:
    """'<secret name>: <form>' for every form of every secret found in `text`."""
    if not secrets:
        raise ValueError("no secrets to look for")
    return [f"{name}: {form}" for name, secret in secrets.items()
            for form, value in secret_forms(secret).items() if value in text]
