"""Worker faults through the loop (fakes of Ray and the runner, the real store): an add cut
short whose Ray came up after all, an add stopped at provision_timeout_s, and a machine swapped
behind a known address (its SSH host key changed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from decide_fixtures import NOW, config, ip, node_type
from loop_fakes import FakeRay, FakeRunner, World

from onprem_ray_agent.adapters.runner import ADD_WORKERS, read_result
from onprem_ray_agent.loop import Agent
from onprem_ray_agent.model import ActionKind, Event, Machine, MachineState
from onprem_ray_agent.store import StateStore

S = MachineState
DATA = Path(__file__).parent / "data"  # a real run's artifacts (test_outcomes.py)
CPU = [ip("cpu", i) for i in (1, 2, 3)]


@pytest.fixture
def world(tmp_path):
    cfg = config(node_type("cpu", 3), provision_timeout_s=600, backoff_base_s=30,
                 quarantine_after_failures=2)
    store = StateStore.open(tmp_path / "state.db")
    ray, runner = FakeRay(), FakeRunner(pool=frozenset(CPU))
    yield World(Agent(cfg, store, ray, runner), store, ray, runner)
    store.close()


def fail_the_add(world: World, now: float, status: str = "failed", **finish) -> str:
    """Let the agent add a machine for one pending bundle, and end that run as given."""
    world.ray.want(1, CPU=4)
    world.agent.iterate(now)
    run = world.runner.last()
    assert (run.playbook, run.ips) == (ADD_WORKERS, (CPU[0],))
    world.runner.finish(run.request_id, status, **finish)
    return run.request_id


def test_a_quarantined_machine_found_alive_is_adopted_and_serves_the_demand(world):
    # The add of 10.0.1.1 is cut short (the network cut mid-add): failed, and quarantined at
    # once (quarantine_after_failures 1).
    world.agent.reconfigure(config(node_type("cpu", 3), provision_timeout_s=600,
                                   quarantine_after_failures=1))
    fail_the_add(world, NOW, "timeout", hosts={})
    world.ray.want(0)
    now = NOW + 601
    world.agent.iterate(now)
    assert world.store.machine(CPU[0]).state == S.QUARANTINED
    started = len(world.runner.started)

    # Its Ray came up after all, and takes the work the add was for.
    world.ray.alive("cpu", 1)
    world.ray.want(1, CPU=4)
    report = world.agent.iterate(now + 5)
    machine = world.store.machine(CPU[0])
    assert machine.state == S.ACTIVE
    assert machine.since == now + 5
    assert machine.reason == "found ALIVE in Ray while recorded quarantined: adopted"
    assert (machine.failures, machine.next_attempt_at) == (0, 0.0)
    (mark,) = [a for a in report.acted if a.kind == ActionKind.MARK]
    assert (mark.event, mark.ips) == (Event.JOINED, (CPU[0],))
    assert len(world.runner.started) == started  # no other machine for the same demand


def test_an_add_stopped_at_its_time_limit_says_which_setting_to_raise(world, caplog):
    request_id = fail_the_add(world, NOW, "timeout", hosts={})
    with caplog.at_level("WARNING", logger="onprem_ray_agent"):
        report = world.agent.iterate(NOW + 601)
    assert world.runner.started[0].timeout_s == 600
    machine = world.store.machine(CPU[0])
    assert machine.state == S.FAILED and machine.failures == 1
    expected = (f"add_workers run {request_id} ran longer than provision_timeout_s 600 s and "
                "was stopped before a result for this host")
    assert machine.reason.startswith(expected)
    assert machine.last_error.startswith(expected)
    assert "raise provision_timeout_s" in machine.reason
    assert world.store.run(request_id).outcome == "timeout"
    assert f"{CPU[0]} provision_timeout: {machine.reason}" in caplog.messages
    assert all(a.ips != (CPU[0],) for a in report.acted if a.kind == ActionKind.ADD)


def test_a_swapped_machine_is_failed_with_the_host_key_reason_then_quarantined(world,
                                                                                 tmp_path):
    directory = tmp_path / "artifacts"
    shutil.copytree(DATA / "host_key_changed", directory)
    now = NOW
    for attempt in (1, 2):
        world.ray.want(1, CPU=4)
        world.agent.iterate(now)
        run = world.runner.last()
        assert run.ips == (CPU[0],)
        # the real artifacts of a run refused by ssh, for this run's host
        real = read_result(directory, run.request_id, ADD_WORKERS, [ip("cpu", 7)])
        world.runner.finish(run.request_id, real.status,
                            hosts={CPU[0]: real.hosts[ip("cpu", 7)]},
                            errors={CPU[0]: real.errors[ip("cpu", 7)]})
        world.ray.want(0)
        world.agent.iterate(now + 5)
        machine = world.store.machine(CPU[0])
        assert machine.failures == attempt
        assert machine.last_error.startswith(f"SSH host key changed for {CPU[0]} "
                                             f"(run {run.request_id}): nothing was sent to it")
        assert f"ssh-keygen -R {CPU[0]}" in machine.last_error
        if attempt == 2:  # failed as often as quarantine_after_failures allows
            assert machine.state == S.QUARANTINED
            assert machine.reason.startswith(f"2 consecutive failures; last error: SSH host "
                                             f"key changed for {CPU[0]}")
            break
        assert machine.state == S.FAILED
        assert machine.reason == machine.last_error.split("\nssh said: ")[0]
        # not tried again at once: another spare serves new demand during the backoff
        world.ray.want(1, CPU=4)
        world.agent.iterate(now + 6)
        assert world.runner.last().ips == (CPU[1],)
        world.runner.finish(world.runner.last().request_id, "failed", hosts={})
        world.ray.want(0)
        world.agent.iterate(now + 7)
        world.store.put(*(Machine(ip=a, node_type="cpu", since=now + 7) for a in CPU[1:]))
        now += 1000  # past the backoff
