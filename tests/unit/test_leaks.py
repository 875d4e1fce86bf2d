"""The secret forms the security tests look for: each is found when a crafted leak puts the
secret in text in that encoding, and nothing is found in text without it."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
import yaml

from tests.leaks import find_leaks, secret_forms

TOKEN = "3f9a" * 16  # the shape of Ray's token: 64 hexadecimal digits
KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\n"
       + "\n".join("b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"[i:]
                   + "QyNTUxOQAAACB"[:i] for i in range(5))
       + "\n-----END OPENSSH PRIVATE KEY-----\n")
SECRETS = {"token": TOKEN, "key": KEY}


def test_every_form_is_there_and_long_enough() -> None:
    token, key = secret_forms(TOKEN), secret_forms(KEY)
    assert set(token) == {"raw", "JSON-escaped", "base64 at offset 0", "base64 at offset 1",
                          "base64 at offset 2"}
    assert {f"line {n}" for n in range(2, 7)} <= set(key)
    assert "line 1" not in key and "line 7" not in key  # the armor is no secret
    assert all(len(form) >= 16 for forms in (token, key) for form in forms.values())


@pytest.mark.parametrize("secret", ["", "short"])
def test_a_secret_too_short_to_look_for_is_refused(secret: str) -> None:
    with pytest.raises(ValueError, match="too short"):
        secret_forms(secret)


def test_no_secrets_is_refused() -> None:
    with pytest.raises(ValueError, match="no secrets"):
        find_leaks("anything", {})


def test_text_without_the_secrets_has_no_leak() -> None:
    other = "0123456789abcdef" * 4
    text = "\n".join([other, json.dumps({"content": base64.b64encode(other.encode()).decode()}),
                      "PLAY RECAP", KEY.splitlines()[0], KEY.splitlines()[-1]])
    assert find_leaks(text, SECRETS) == []


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_a_raw_leak_is_found(name: str) -> None:
    found = find_leaks(f"ok: [10.0.0.2] => {SECRETS[name]} ...", SECRETS)
    assert f"{name}: raw" in found


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_a_json_escaped_leak_is_found(name: str) -> None:
    text = json.dumps({"invocation": {"module_args": {"content": SECRETS[name]}}})
    assert f"{name}: JSON-escaped" in find_leaks(text, SECRETS)


def test_a_key_shown_as_an_indented_yaml_block_is_found_by_its_lines() -> None:
    text = yaml.safe_dump({"changed": True, "content": KEY}, default_style="|")
    assert KEY not in text  # indented: the raw form alone would miss it
    found = find_leaks(text, SECRETS)
    assert {f"key: line {n}" for n in range(2, 7)} <= set(found), found


@pytest.mark.parametrize("name", sorted(SECRETS))
@pytest.mark.parametrize("offset", [0, 1, 2])
def test_a_base64_leak_inside_a_larger_file_is_found_at_every_alignment(name: str,
                                                                        offset: int) -> None:
    """slurp of a file holding the secret after `offset` (mod 3) other bytes, with whatever
    follows it (0 to 5 bytes): the encoded secret's middle is found whatever surrounds it."""
    filler = hashlib.sha256(f"{name}{offset}".encode()).digest()  # other bytes of the file
    for prefix_groups in range(3):
        for after in range(6):
            before = filler[:3 * prefix_groups + offset]
            tail = filler[-after:] if after else b""
            encoded = base64.b64encode(before + SECRETS[name].encode() + tail).decode()
            assert SECRETS[name] not in encoded
            found = find_leaks(json.dumps({"content": encoded, "encoding": "base64"}), SECRETS)
            assert found == [f"{name}: base64 at offset {offset}"], (prefix_groups, after)
