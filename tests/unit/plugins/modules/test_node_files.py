"""onprem.ray.node_files: each entry ensured only when it differs, atomically, with check mode,
diff, and secret content never returned."""

from __future__ import annotations

import getpass
import json
import os
import stat

from ansible_collections.onprem.ray.plugins.modules import node_files

USER = getpass.getuser()


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_writes_what_differs_once(run_module, tmp_path) -> None:
    target = tmp_path / "conf" / "start.sh"
    files = [{"path": str(tmp_path / "conf"), "state": "directory", "mode": "0750"},
             {"path": str(target), "content": "exec ray start\n", "owner": USER, "mode": "0640"}]
    rc, result = run_module(node_files, {"files": files})
    assert rc == 0 and result["changed"]
    assert result["changed_paths"] == [str(tmp_path / "conf"), str(target)]
    assert target.read_text() == "exec ray start\n"
    assert (_mode(tmp_path / "conf"), _mode(target)) == (0o750, 0o640)
    rc, again = run_module(node_files, {"files": files})
    assert rc == 0 and not again["changed"] and again["changed_paths"] == []


def test_check_mode_reports_and_writes_nothing(run_module, tmp_path) -> None:
    target = tmp_path / "unit.service"
    target.write_text("old\n")
    rc, result = run_module(node_files, {"files": [{"path": str(target), "content": "new\n"}]},
                            check=True, diff=True)
    assert rc == 0 and result["changed"] and result["changed_paths"] == [str(target)]
    assert target.read_text() == "old\n"
    assert result["diff"] == [{"before_header": str(target), "after_header": str(target),
                               "before": "old\n", "after": "new\n"}]


def test_diff_of_a_mode_change_says_so(run_module, tmp_path) -> None:
    target = tmp_path / "f"
    target.write_text("same\n")
    os.chmod(target, 0o644)
    entry = {"path": str(target), "content": "same\n", "mode": "0600"}
    rc, result = run_module(node_files, {"files": [entry]}, diff=True)
    assert rc == 0 and result["changed"] and _mode(target) == 0o600
    assert "mode" in result["diff"][0]["before"]


def test_secret_content_is_never_returned(run_module, tmp_path) -> None:
    secret = ("-----BEGIN KEY-----\n"  # noqa: S105 - a made-up key
              "c2VjcmV0LWtleS1ib2R5LXRoYXQtbXVzdC1ub3QtbGVhaw==\n-----END KEY-----\n")
    target = tmp_path / "key"
    target.write_text("an old key\n")
    entry = {"path": str(target), "secret_content": secret, "mode": "0600"}
    rc, result = run_module(node_files, {"files": [entry]}, diff=True)
    assert rc == 0 and result["changed"] and target.read_text() == secret
    assert _mode(target) == 0o600
    text = json.dumps(result)
    for form in (secret, "c2VjcmV0LWtleS1ib2R5", json.dumps(secret)[1:-1], "an old key"):
        assert form not in text
    assert "not shown" in result["diff"][0]["after"]


def test_a_directory_in_the_way_names_the_path(run_module, tmp_path) -> None:
    (tmp_path / "start.sh").mkdir()
    entry = {"path": str(tmp_path / "start.sh"), "content": "x"}
    rc, result = run_module(node_files, {"files": [entry]})
    assert rc == 1 and result["failed"]
    assert result["msg"] == f"{tmp_path / 'start.sh'}: is a directory"


def test_a_missing_parent_is_an_os_error_with_the_path(run_module, tmp_path) -> None:
    path = tmp_path / "missing" / "f"
    rc, result = run_module(node_files, {"files": [{"path": str(path), "content": "x"}]})
    assert rc == 1 and result["msg"].startswith(f"{path}: FileNotFoundError")


def test_relative_paths_and_bad_modes_are_refused(run_module, tmp_path) -> None:
    rc, result = run_module(node_files, {"files": [{"path": "relative", "content": "x"}]})
    assert rc == 1 and "not an absolute path" in result["msg"]
    entry = {"path": str(tmp_path / "f"), "content": "x", "mode": "rw"}
    rc, result = run_module(node_files, {"files": [entry]})
    assert rc == 1 and "not an octal number" in result["msg"]


def test_an_unknown_owner_is_an_error_except_in_check_mode(run_module, tmp_path) -> None:
    entry = {"path": str(tmp_path / "f"), "content": "x", "owner": "no-such-user-here"}
    rc, result = run_module(node_files, {"files": [entry]})
    assert rc == 1 and "unknown user or group" in result["msg"]
    rc, result = run_module(node_files, {"files": [entry]}, check=True)
    assert rc == 0 and result["changed"]
