"""onprem.ray.cluster_token: generated once in Ray's format, never overwritten, never returned."""

from __future__ import annotations

import getpass
import json
import os
import re
import stat

from ansible_collections.onprem.ray.plugins.modules import cluster_token

USER = getpass.getuser()


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_generated_once_in_rays_format_and_never_returned(run_module, tmp_path) -> None:
    path = tmp_path / "auth_token"
    copy = tmp_path / "home" / ".ray" / "auth_token"
    args = {"path": str(path), "owner": USER, "copies": [{"path": str(copy), "owner": USER}]}
    rc, result = run_module(cluster_token, args, diff=True)
    token = path.read_text()
    assert rc == 0 and result["changed"] and result["generated"]
    assert re.fullmatch(r"[0-9a-f]{64}", token)
    assert copy.read_text() == token
    assert (_mode(path), _mode(copy), _mode(copy.parent)) == (0o600, 0o600, 0o700)
    assert token not in json.dumps(result)
    rc, again = run_module(cluster_token, args)
    assert rc == 0 and not again["changed"] and not again["generated"]
    assert path.read_text() == token


def test_two_generated_tokens_differ(run_module, tmp_path) -> None:
    tokens = set()
    for name in ("a", "b"):
        run_module(cluster_token, {"path": str(tmp_path / name)})
        tokens.add((tmp_path / name).read_text())
    assert len(tokens) == 2


def test_a_given_token_replaces_the_file_and_is_hidden(run_module, tmp_path) -> None:
    path = tmp_path / "auth_token"
    path.write_text("0" * 64)
    given = "ab" * 32
    rc, result = run_module(cluster_token, {"path": str(path), "token": given}, diff=True)
    assert rc == 0 and result["changed"] and not result["generated"]
    assert path.read_text() == given
    assert given not in json.dumps(result)
    rc, again = run_module(cluster_token, {"path": str(path), "token": given})
    assert not again["changed"]


def test_a_wrong_mode_is_fixed_without_a_new_token(run_module, tmp_path) -> None:
    path = tmp_path / "auth_token"
    path.write_text("cd" * 32)
    os.chmod(path, 0o644)
    rc, result = run_module(cluster_token, {"path": str(path)})
    assert rc == 0 and result["changed"] and not result["generated"]
    assert path.read_text() == "cd" * 32 and _mode(path) == 0o600


def test_check_mode_generates_nothing(run_module, tmp_path) -> None:
    path = tmp_path / "auth_token"
    rc, result = run_module(cluster_token, {"path": str(path)}, check=True, diff=True)
    assert rc == 0 and result["changed"] and result["generated"]
    assert not path.exists()
    assert result["diff"][0]["after"].startswith("(token not shown")


def test_generate_false_refuses_a_missing_token(run_module, tmp_path) -> None:
    rc, result = run_module(cluster_token, {"path": str(tmp_path / "t"), "generate": False})
    assert rc == 1 and "no token there" in result["msg"]
    rc, result = run_module(cluster_token, {"path": str(tmp_path / "t"), "token": "  "})
    assert rc == 1 and "empty" in result["msg"]
