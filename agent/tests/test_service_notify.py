"""The agent tells systemd it is ready (its unit is Type=notify), once started and no sooner."""

from __future__ import annotations

import socket

from loop_fakes import FakeRay, FakeRunner
from test_service import CPU, cluster_file, options  # noqa: F401 (fixture)

from onprem_ray_agent.service import Signals, run


def test_ready_is_sent_to_the_notify_socket_once_started(tmp_path, cluster_file,  # noqa: F811
                                                          monkeypatch):
    address = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(address))
        sock.settimeout(10)
        monkeypatch.setenv("NOTIFY_SOCKET", str(address))
        code = run(options(tmp_path, cluster_file, once=True), signals=Signals(), ray=FakeRay(),
                   runner=FakeRunner(pool=frozenset(CPU)))
        assert code == 0
        assert sock.recv(64) == b"READY=1"


def test_nothing_is_sent_when_the_start_fails(tmp_path, cluster_file, monkeypatch):  # noqa: F811
    address = tmp_path / "notify"
    cluster_file.write_text("provider: [\n")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(address))
        sock.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", str(address))
        assert run(options(tmp_path, cluster_file, once=True), signals=Signals(),
                   ray=FakeRay()) == 2
        try:
            received = sock.recv(64)
        except BlockingIOError:
            received = b""
        assert received == b""
