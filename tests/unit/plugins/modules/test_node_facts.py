"""onprem.ray.node_facts: what the roles decide on, read in one call."""

from __future__ import annotations

import getpass
import hashlib
import platform
import socket
import sys

from ansible_collections.onprem.ray.plugins.modules import node_facts

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0A0DFF0A:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 1
   1: 0100007F:2051 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2
   2: 0A0DFF0A:D2F0 0A0DFF0B:18EB 01 00000000:00000000 00:00000000 00000000   999        0 3
"""


def test_listening_ports_are_the_listen_sockets_only(tmp_path) -> None:
    table = tmp_path / "tcp"
    table.write_text(TCP)
    assert node_facts.listening_ports((str(table), str(tmp_path / "absent"))) == {6379, 8273}


def test_stat_path_reports_sha1_like_ansible(tmp_path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"content\n")
    path.chmod(0o640)
    found = node_facts.stat_path(str(path))
    assert found["exists"] and not found["isdir"] and found["mode"] == "0640"
    assert found["owner"] == getpass.getuser()
    assert found["sha1"] == hashlib.sha1(b"content\n").hexdigest()  # noqa: S324
    assert node_facts.stat_path(str(tmp_path / "absent")) == {"exists": False}
    assert node_facts.stat_path(str(tmp_path))["isdir"]


def test_tree_hash_ignores_python_caches_and_sees_content(tmp_path) -> None:
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    first = node_facts.tree_hash(str(tmp_path))
    (tmp_path / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "pkg" / "b.pyc").write_bytes(b"\0")
    assert node_facts.tree_hash(str(tmp_path)) == first
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    assert node_facts.tree_hash(str(tmp_path)) != first
    assert node_facts.tree_hash(str(tmp_path / "absent")) is None


def test_installed_version_reads_the_dist_info(tmp_path) -> None:
    info = tmp_path / "lib" / "python3.11" / "site-packages" / "ray-2.60.0.dist-info"
    info.mkdir(parents=True)
    assert node_facts.installed_version(str(tmp_path), "ray") is None  # no METADATA yet
    (info / "METADATA").write_text("Name: ray\n")
    assert node_facts.installed_version(str(tmp_path), "ray") == "2.60.0"


def test_python_info_of_a_real_and_a_missing_interpreter() -> None:
    version, venv = node_facts.python_info(sys.executable)
    assert version == ".".join(map(str, sys.version_info[:3])) and venv is True
    assert node_facts.python_info("/nonexistent/python3") == ("", False)


def test_the_module_reports_everything_and_changes_nothing(run_module, tmp_path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "setup_commands.sha256").write_text("abc\n")
    known = tmp_path / "known_hosts"
    known.write_text("10.0.0.1 ssh-ed25519 AAAA\n")
    rc, result = run_module(node_facts, {
        "python": sys.executable, "venv": str(tmp_path / "venv"), "state_dir": str(state),
        "paths": [str(known)], "users": [getpass.getuser(), "no-such-user-here"],
        "known_hosts": str(known), "ports": [0, 1], "trees": [str(state)],
    }, check=True)
    assert rc == 0 and result["changed"] is False
    assert result["commands_state"] == {"setup_commands": "abc"}
    assert result["known_hosts"] == ["10.0.0.1 ssh-ed25519 AAAA"]
    assert result["users"]["no-such-user-here"] == {"exists": False}
    assert result["users"][getpass.getuser()]["exists"]
    assert result["ray_version"] is None and result["venv_python"] is False
    assert result["ports_in_use"] == [] and result["python_venv"] is True
    assert result["files"][str(known)]["exists"] and result["trees"][str(state)]
    assert result["arch"] == platform.machine()
    assert result["glibc"] == (platform.libc_ver()[1] if platform.libc_ver()[0] == "glibc" else "")


def test_read_small_reports_small_text_files_whole_and_nothing_else(tmp_path) -> None:
    key = tmp_path / "key.pub"
    key.write_text("ssh-ed25519 AAAA head\n")
    big = tmp_path / "big"
    big.write_text("x" * 65537)
    assert node_facts.read_small(str(key)) == "ssh-ed25519 AAAA head\n"
    assert node_facts.read_small(str(big)) is None
    assert node_facts.read_small(str(tmp_path / "absent")) is None


def test_the_module_returns_the_files_it_is_asked_to_read(run_module, tmp_path) -> None:
    key = tmp_path / "key.pub"
    key.write_text("ssh-ed25519 AAAA head\n")
    rc, result = run_module(node_facts, {
        "python": "", "venv": str(tmp_path / "venv"),
        "read": [str(key), str(tmp_path / "absent")]}, check=True)
    assert rc == 0 and result["changed"] is False
    assert result["contents"] == {str(key): "ssh-ed25519 AAAA head\n",
                                  str(tmp_path / "absent"): None}


def test_reachable_tries_one_connection_and_says_whether_it_was_accepted() -> None:
    tried = []

    class Socket:
        def close(self) -> None:
            tried.append("closed")

    def accept(address, timeout):
        tried.append((address, timeout))
        return Socket()

    def refuse(address, timeout):
        raise ConnectionRefusedError(111, "Connection refused")

    assert node_facts.reachable("10.0.0.10:6379", connect=accept) is True
    assert tried == [(("10.0.0.10", 6379), 1.0), "closed"]
    assert node_facts.reachable("[fd00::1]:6379", connect=accept) is True
    assert tried[-2] == (("fd00::1", 6379), 1.0)
    assert node_facts.reachable("10.0.0.10:6379", connect=refuse) is False
    assert node_facts.reachable("no-port", connect=accept) is False


def test_the_module_reports_a_listening_and_a_closed_port(run_module, tmp_path) -> None:
    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        closed.bind(("127.0.0.1", 0))  # bound, not listening: refused
        open_at = f"127.0.0.1:{listening.getsockname()[1]}"
        closed_at = f"127.0.0.1:{closed.getsockname()[1]}"
        rc, result = run_module(node_facts, {
            "python": "", "venv": str(tmp_path / "venv"), "connect": [open_at, closed_at]},
            check=True)
    assert rc == 0 and result["reachable"] == {open_at: True, closed_at: False}
