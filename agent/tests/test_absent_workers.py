"""A worker that died while the head's Ray was down never registers with the new GCS, which
never reports it DEAD either: through the loop (fakes of Ray and the runner, the real store),
it is waited for provision_timeout_s from the first iteration that found it absent with the
head ALIVE, then lost, replaced for the demand, and adopted if it comes back."""

from __future__ import annotations

import pytest
from decide_fixtures import NOW, config, ip, node_type
from loop_fakes import FakeRay, FakeRunner, World

from onprem_ray_agent.loop import Agent
from onprem_ray_agent.model import ActionKind, Machine, MachineState
from onprem_ray_agent.store import StateStore

S = MachineState
CPU = [ip("cpu", i) for i in (1, 2, 3)]
CONFIG = config(node_type("cpu", 3), provision_timeout_s=600, backoff_base_s=30)


@pytest.fixture
def world(tmp_path):
    """10.0.1.1 and 10.0.1.2 active in Ray; then the head's Ray restarts, and only 10.0.1.2
    registers with the new GCS (10.0.1.1 died while the head was down)."""
    store = StateStore.open(tmp_path / "state.db")
    store.put(*(Machine(ip=address, node_type="cpu", state=S.ACTIVE, since=NOW - 3600)
                for address in CPU[:2]),
              Machine(ip=CPU[2], node_type="cpu", since=NOW - 3600))
    ray, runner = FakeRay(), FakeRunner(pool=frozenset(CPU))
    ray.alive("cpu", 1)
    ray.alive("cpu", 2)
    world = World(Agent(CONFIG, store, ray, runner), store, ray, runner)
    world.agent.iterate(NOW - 10)
    ray.restarted(("cpu", 2))
    yield world
    store.close()


def states(world: World) -> dict[str, S]:
    return {address: machine.state for address, machine in world.store.machines().items()}


def test_a_worker_that_never_registers_again_is_lost_and_replaced(world):
    for offset in (0, 300, 600):
        report = world.agent.iterate(NOW + offset)
        assert states(world)[CPU[0]] == S.ACTIVE
    assert any(note.startswith(f"{CPU[0]} is active but not in Ray's node list yet")
               for note in report.decision.notes)

    world.ray.alive("cpu", 2, busy=True)
    world.ray.want(1, CPU=4)
    report = world.agent.iterate(NOW + 601)
    machine = world.store.machine(CPU[0])
    assert machine.state == S.FAILED
    assert machine.reason.startswith("not in Ray's node list for 601 s since ")
    assert machine.reason.endswith("its Ray did not register again (after a restart of the "
                                   "head's Ray its node would have); lost")
    assert world.runner.last().ips == (CPU[2],)  # the spare serves the demand
    assert [a.ips for a in report.acted if a.kind == ActionKind.ADD] == [(CPU[2],)]
    assert states(world)[CPU[1]] == S.ACTIVE  # registered again: never counted

    # It comes back (e.g. plugged in again, its Ray started by its unit): adopted.
    world.ray.alive("cpu", 1)
    world.agent.iterate(NOW + 700)
    machine = world.store.machine(CPU[0])
    assert machine.state == S.ACTIVE
    assert machine.reason == "found ALIVE in Ray while recorded failed: adopted"


def test_a_worker_that_registers_again_in_time_is_kept(world):
    world.agent.iterate(NOW)
    world.agent.iterate(NOW + 500)
    world.ray.alive("cpu", 1)
    world.agent.iterate(NOW + 510)
    world.ray.restarted(("cpu", 2))  # the head's Ray restarted once more
    for offset in (520, 1100):
        world.agent.iterate(NOW + offset)
        assert states(world)[CPU[0]] == S.ACTIVE
    world.agent.iterate(NOW + 1121)
    assert states(world)[CPU[0]] == S.FAILED


def test_the_time_the_gcs_does_not_answer_never_counts(world):
    world.agent.iterate(NOW)
    world.ray.down = "connection refused"
    world.agent.iterate(NOW + 300)
    world.ray.down = ""
    for offset in (400, 1000):
        world.agent.iterate(NOW + offset)
        assert states(world)[CPU[0]] == S.ACTIVE
    world.agent.iterate(NOW + 1001)
    assert states(world)[CPU[0]] == S.FAILED


def test_an_agent_restart_starts_the_count_over(world):
    world.agent.iterate(NOW)
    world.agent.iterate(NOW + 300)
    world.restart_agent()
    for offset in (400, 1000):
        world.agent.iterate(NOW + offset)
        assert states(world)[CPU[0]] == S.ACTIVE
    world.agent.iterate(NOW + 1001)
    assert states(world)[CPU[0]] == S.FAILED
