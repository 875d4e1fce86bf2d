"""The GCS helpers the wait and drain modules share, and their loops, on fakes: no Ray here."""

from __future__ import annotations

import pytest
from ansible_collections.onprem.ray.plugins.module_utils import ray_gcs
from ansible_collections.onprem.ray.plugins.modules import ray_node_drain, ray_node_wait


class Clock:
    """A clock that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def unreachable(client, ip):
    raise RuntimeError("down")


def test_split_address() -> None:
    assert ray_gcs.split_address("10.0.0.1:6379") == ("10.0.0.1", 6379)
    assert ray_gcs.split_address("[fd00::1]:6379") == ("fd00::1", 6379)
    for bad in ("10.0.0.1", ":6379", "host:port"):
        with pytest.raises(ValueError, match="not a host:port"):
            ray_gcs.split_address(bad)


def test_wait_for_port_returns_once_it_answers_and_gives_up_at_the_deadline() -> None:
    clock, calls = Clock(), []

    class Conn:
        def close(self) -> None:
            pass

    def answers_third_time(address, timeout):
        calls.append(address)
        if len(calls) < 3:
            raise ConnectionRefusedError("refused")
        return Conn()

    ray_gcs.wait_for_port("10.0.0.1:6379", 10, connect=answers_third_time, clock=clock,
                          sleep=clock.sleep)
    assert calls == [("10.0.0.1", 6379)] * 3 and clock.now == 1.0

    def never(address, timeout):
        raise ConnectionRefusedError("refused")

    clock = Clock()
    with pytest.raises(ray_gcs.GcsUnreachable, match=r"10\.0\.0\.1:6379 does not answer: refused"):
        ray_gcs.wait_for_port("10.0.0.1:6379", 5, connect=never, clock=clock, sleep=clock.sleep)
    assert 5.0 <= clock.now <= 5.5


def test_wait_alive_keeps_the_last_error_until_the_node_shows_up() -> None:
    clock, answers = Clock(), [RuntimeError("GCS starting"), [], ["node"]]

    def nodes(client, ip):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert ray_node_wait.wait_alive(None, "10.0.0.2", 60, nodes=nodes, clock=clock,
                                    sleep=clock.sleep) == ("node", None)
    clock = Clock()
    info, last = ray_node_wait.wait_alive(
        None, "10.0.0.2", 3, nodes=unreachable,
        clock=clock, sleep=clock.sleep)
    assert info is None and last == "RuntimeError: down" and 3.0 <= clock.now <= 3.5


def test_wait_gone_is_true_once_ray_lets_the_node_go_and_false_at_the_deadline() -> None:
    clock, answers = Clock(), [["node"], ["node"], []]
    assert ray_node_drain.wait_gone(None, "ip", 60, nodes=lambda c, ip: answers.pop(0),
                                    clock=clock, sleep=clock.sleep)
    assert clock.now == pytest.approx(0.2)
    clock = Clock()
    assert not ray_node_drain.wait_gone(None, "ip", 2, nodes=lambda c, ip: ["node"],
                                        clock=clock, sleep=clock.sleep)


class FakeId:
    def hex(self) -> str:
        return "ab12"


class FakeInfo:
    """A GcsNodeInfo as the modules read it."""

    def __init__(self) -> None:
        self.node_id = FakeId()
        self.node_manager_address = "10.0.0.2"
        self.is_head_node = False
        self.resources_total = {"CPU": 2.0, "node:10.0.0.2": 1.0}
        self.labels = {"type": "cpu"}


class FakeClient:
    def __init__(self, accept: bool) -> None:
        self.accept, self.drains = accept, []

    def drain_node(self, node_id, reason, message, deadline_ms):
        self.drains.append((node_id, reason, message))
        return self.accept, b"node has running tasks"


@pytest.fixture
def gcs(monkeypatch):
    """The drain module against a fake client with one ALIVE node (until drained)."""
    state = {"client": FakeClient(accept=False), "alive": [FakeInfo()]}
    monkeypatch.setattr(ray_node_drain, "HAS_RAY", True)
    monkeypatch.setattr(ray_gcs, "connect", lambda address, timeout: state["client"])
    monkeypatch.setattr(ray_gcs, "alive_nodes", lambda client, ip: list(state["alive"]))
    monkeypatch.setattr(ray_node_drain, "reason_code", lambda reason: reason)
    return state


ARGS = {"gcs_address": "10.0.0.1:6379", "node_ip": "10.0.0.2", "timeout": 5}


def test_a_refused_drain_fails_with_rays_reason(run_module, gcs) -> None:
    rc, result = run_module(ray_node_drain, ARGS)
    assert rc == 1
    assert result["msg"] == ("Ray refused to drain 10.0.0.2 (node ab12): node has running tasks; "
                             "the node keeps running")
    assert gcs["client"].drains == [("ab12", "idle", "onprem.ray")]


def test_check_mode_asks_ray_for_no_drain(run_module, gcs) -> None:
    rc, result = run_module(ray_node_drain, ARGS, check=True)
    assert rc == 0 and result["changed"] and not result["drained"]
    assert gcs["client"].drains == []
    assert result["node"] == {"node_id": "ab12", "ip": "10.0.0.2", "is_head": False,
                              "resources": {"CPU": 2.0}, "labels": {"type": "cpu"}}


def test_the_head_is_never_drained_and_an_absent_node_is_no_change(run_module, gcs) -> None:
    gcs["alive"] = []
    rc, result = run_module(ray_node_drain, ARGS)
    assert rc == 0 and not result["changed"] and result["msg"] == "10.0.0.2 is not in Ray"
    head = FakeInfo()
    head.is_head_node = True
    gcs["alive"] = [head]
    rc, result = run_module(ray_node_drain, ARGS)
    assert rc == 1 and "the head is never drained" in result["msg"]
    assert gcs["client"].drains == []


class FakeSystemd:
    """The module's view of systemctl: `active` units, commands recorded, start's exit code."""

    def __init__(self, active: bool, check_mode: bool = False, start_rc: int = 0) -> None:
        self.active, self.check_mode, self.start_rc = active, check_mode, start_rc
        self.commands: list[list[str]] = []

    def get_bin_path(self, name: str, required: bool = False) -> str:
        return f"/usr/bin/{name}"

    def run_command(self, argv: list[str]) -> tuple[int, str, str]:
        self.commands.append(argv)
        if argv[1] == "is-active":
            return (0 if self.active else 3), "", ""
        return self.start_rc, "", "Job for onprem-ray.service failed." if self.start_rc else ""

    def fail_json(self, **result: object) -> None:
        raise AssertionError(result)


def test_the_wait_starts_an_inactive_unit_and_leaves_an_active_one_alone() -> None:
    inactive = FakeSystemd(active=False)
    assert ray_node_wait.start(inactive, "onprem-ray.service") is True
    assert inactive.commands[-1] == ["/usr/bin/systemctl", "start", "onprem-ray.service"]
    active = FakeSystemd(active=True)
    assert ray_node_wait.start(active, "onprem-ray.service") is False
    assert [argv[1] for argv in active.commands] == ["is-active"]
    nothing = FakeSystemd(active=False)
    assert ray_node_wait.start(nothing, "") is False and nothing.commands == []


def test_the_wait_in_check_mode_reports_the_start_without_starting() -> None:
    module = FakeSystemd(active=False, check_mode=True)
    assert ray_node_wait.start(module, "onprem-ray.service") is True
    assert [argv[1] for argv in module.commands] == ["is-active"]


def test_a_failed_start_fails_the_wait_with_the_unit_and_systemds_reason() -> None:
    module = FakeSystemd(active=False, start_rc=1)
    with pytest.raises(AssertionError) as failed:
        ray_node_wait.start(module, "onprem-ray.service")
    message = failed.value.args[0]["msg"]
    assert ("systemctl start onprem-ray.service failed: Job for onprem-ray.service failed."
            in message)
    assert "journalctl -u onprem-ray.service" in message
