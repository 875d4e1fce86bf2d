"""The roles' node helper (roles/ray/files/onprem_ray_node.py), run as the roles run it: a
subprocess with JSON arguments, entries on stdin, one JSON answer on stdout."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HELPER = Path(__file__).resolve().parents[2] / "roles" / "ray" / "files" / "onprem_ray_node.py"
SECRET = "0123456789abcdef" * 4


def run(command: str, args: dict, stdin: dict | None = None) -> tuple[int, dict, str]:
    result = subprocess.run([sys.executable, str(HELPER), command, json.dumps(args)],
                            input=json.dumps(stdin) if stdin is not None else None,
                            capture_output=True, text=True, check=False, timeout=60)
    return result.returncode, json.loads(result.stdout), result.stdout + result.stderr


def test_apply_writes_what_differs_once_and_never_prints_contents(tmp_path: Path) -> None:
    token, conf = tmp_path / "conf" / "auth_token", tmp_path / "conf"
    entries = [{"path": str(conf), "state": "directory", "mode": "0750"},
               {"path": str(token), "content": SECRET, "mode": "0600"}]
    rc, answer, output = run("apply", {"check": False}, {"entries": entries})
    assert rc == 0 and answer["changed"] is True
    assert answer["changed_paths"] == [str(conf), str(token)]
    assert answer["reloaded"] is False and answer["started"] == []
    assert token.read_text() == SECRET and token.stat().st_mode & 0o777 == 0o600
    assert conf.stat().st_mode & 0o777 == 0o750
    assert SECRET not in output
    rc, answer, _ = run("apply", {"check": False}, {"entries": entries})
    assert rc == 0 and answer == {"changed": False, "changed_paths": [], "reloaded": False,
                                  "started": []}


def test_apply_in_check_mode_reports_and_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "start-ray.sh"
    rc, answer, _ = run("apply", {"check": True},
                        {"entries": [{"path": str(target), "content": "exec ray start\n"}]})
    assert rc == 0 and answer["changed_paths"] == [str(target)]
    assert not target.exists()


def test_a_generated_token_is_kept_and_a_mode_change_alone_keeps_the_content(
        tmp_path: Path) -> None:
    token = tmp_path / "auth_token"
    entry = {"path": str(token), "generate": "token", "mode": "0600"}
    assert run("apply", {}, {"entries": [entry]})[0] == 0
    first = token.read_text()
    assert len(first) == 64 and int(first, 16) >= 0
    token.chmod(0o644)
    rc, answer, _ = run("apply", {}, {"entries": [entry]})
    assert rc == 0 and answer["changed_paths"] == [str(token)]
    assert token.read_text() == first and token.stat().st_mode & 0o777 == 0o600


def test_a_failed_entry_names_the_path_and_cause_not_the_content(tmp_path: Path) -> None:
    blocked = tmp_path / "start-ray.sh"
    blocked.mkdir()
    done = tmp_path / "first"
    rc, answer, output = run("apply", {}, {"entries": [
        {"path": str(done), "content": "x"},
        {"path": str(blocked), "content": SECRET}]})
    assert rc == 1 and answer["failed"] is True
    assert answer["msg"].startswith(f"{blocked}: IsADirectoryError")
    assert answer["changed_paths"] == [str(done)]
    assert SECRET not in output


def test_probe_reports_files_users_and_units(tmp_path: Path) -> None:
    token = tmp_path / "auth_token"
    token.write_text(SECRET)
    rc, answer, output = run("probe", {"files": [str(token), str(tmp_path / "none")],
                                       "users": ["root"]})
    assert rc == 0 and SECRET not in output
    found = answer["files"][str(token)]
    assert found["exists"] is True and found["isdir"] is False
    assert found["sha1"] == hashlib.sha1(SECRET.encode()).hexdigest()  # noqa: S324
    assert answer["files"][str(tmp_path / "none")]["exists"] is False
    assert answer["users"]["root"]["exists"] is True


def load_helper():
    spec = importlib.util.spec_from_file_location("onprem_ray_node", HELPER)
    helper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helper)
    return helper


def test_awaiting_an_address_before_a_start_returns_once_it_answers_or_says_why(
        capsys: pytest.CaptureFixture[str]) -> None:
    helper = load_helper()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        helper._await_port({"host": "127.0.0.1", "port": port, "timeout": 5})
    with pytest.raises(SystemExit):
        helper._await_port({"host": "127.0.0.1", "port": port, "timeout": 0.5,
                            "what": "the head's GCS"})
    answer = json.loads(capsys.readouterr().out)
    assert answer["msg"].startswith(f"the head's GCS 127.0.0.1:{port} did not answer")
    assert "Ray was not started here" in answer["msg"]


def test_old_staging_directories_of_other_contents_are_pruned(tmp_path: Path) -> None:
    helper = load_helper()
    old, recent, current = (tmp_path / name for name in ("old", "recent", "current"))
    for stage in (old, recent, current):
        stage.mkdir()
        (stage / "link").symlink_to(tmp_path)
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    os.utime(current, (two_days_ago, two_days_ago))
    helper._prune_stages(str(tmp_path), keep=str(current))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "recent"]
    assert (current / "link").resolve() == tmp_path.resolve()
