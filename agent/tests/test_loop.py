"""The loop, one iteration at a time: fakes of Ray and the runner, the real SQLite store."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import pytest
from decide_fixtures import HEAD, NOW, config, ip, node_type
from loop_fakes import FakeMetrics, FakeRay, FakeRunner

from onprem_ray_agent.adapters.runner import ADD_WORKERS, FAILED, OK, RETIRE_WORKERS, UNREACHABLE
from onprem_ray_agent.loop import Agent
from onprem_ray_agent.model import ActionKind, Machine, MachineState
from onprem_ray_agent.store import StateStore

S = MachineState
CPU = [ip("cpu", i) for i in (1, 2, 3)]


@dataclass
class World:
    agent: Agent
    store: StateStore
    ray: FakeRay
    runner: FakeRunner
    metrics: FakeMetrics

    def states(self) -> dict[str, str]:
        return {address: m.state.value for address, m in self.store.machines().items()}


@pytest.fixture
def world(tmp_path):
    cfg = config(node_type("cpu", 3), idle_timeout_minutes=1)
    store = StateStore.open(tmp_path / "state.db")
    ray, runner, metrics = FakeRay(), FakeRunner(pool=frozenset(CPU)), FakeMetrics()
    yield World(Agent(cfg, store, ray, runner, metrics=metrics), store, ray, runner, metrics)
    store.close()


def put(world: World, state: str, *indexes: int, **kwargs) -> None:
    kwargs.setdefault("since", NOW - 60)
    world.store.put(*(Machine(ip=ip("cpu", i), node_type="cpu", state=S(state), **kwargs)
                      for i in indexes))


def test_demand_adds_machines_and_they_join_when_ray_lists_them(world):
    world.ray.want(2, CPU=4)
    report = world.agent.iterate(NOW)
    run = world.runner.last()
    assert (run.playbook, run.ips) == (ADD_WORKERS, (CPU[0], CPU[1]))
    assert report.started == (run.request_id,)
    assert world.states() == {CPU[0]: "joining", CPU[1]: "joining", CPU[2]: "spare"}
    assert world.store.machine(CPU[0]).request_id == run.request_id
    (recorded,) = world.store.runs(unfinished_only=True)
    assert (recorded.kind, recorded.ips) == ("add", (CPU[0], CPU[1]))

    world.agent.iterate(NOW + 5)  # still running: nothing new for the same demand
    assert len(world.runner.started) == 1

    world.runner.finish(run.request_id)
    world.ray.alive("cpu", 1, busy=True)
    world.ray.alive("cpu", 2, busy=True)
    world.ray.want(0)
    world.agent.iterate(NOW + 10)
    assert world.states() == {CPU[0]: "active", CPU[1]: "active", CPU[2]: "spare"}
    assert world.store.runs(unfinished_only=True) == []
    assert world.store.run(run.request_id).outcome == "successful"
    assert world.metrics.latencies == [10.0, 10.0]
    assert world.metrics.runs == [(ADD_WORKERS, "successful")]
    assert world.metrics.actions["add"] == 2


@pytest.mark.parametrize(("status", "outcome", "error", "state", "failures"), [
    ("successful", OK, "", "joining", 0),
    ("failed", FAILED, "Install Ray: pip: no matching distribution", "failed", 1),
    ("failed", UNREACHABLE, "Gather: ssh: connect to host port 22: No route", "failed", 1),
    ("canceled", None, "", "draining", 0),  # no fault: retired (then spare), no backoff
    ("timeout", None, "", "failed", 1),
])
def test_an_add_runs_outcome_on_its_machine(world, status, outcome, error, state, failures):
    world.ray.want(1, CPU=4)
    world.agent.iterate(NOW)
    run = world.runner.last()
    hosts = {} if outcome is None else {CPU[0]: outcome}
    world.runner.finish(run.request_id, status, hosts=hosts,
                        errors={CPU[0]: error} if error else {})
    world.agent.iterate(NOW + 5)
    machine = world.store.machine(CPU[0])
    assert (machine.state.value, machine.failures) == (state, failures)
    if error:
        assert machine.last_error == error
        assert world.store.run(run.request_id).output_tail == f"{CPU[0]}: {error}"
    assert world.store.run(run.request_id).outcome == status


RETIRE_CASES = [
    # hosts, failing task, the machine afterwards
    ({CPU[0]: OK}, "", "spare", ""),
    ({CPU[0]: FAILED}, "Retire | a refused or failed drain leaves the node running", "active",
     "Ray refused the drain: node has running work"),
    ({CPU[0]: FAILED}, "Retire | Ray stopped and disabled", "failed", "systemctl: timeout"),
    ({CPU[0]: UNREACHABLE}, "Retire | is Ray set up here", "failed", "ssh: no route to host"),
    ({}, "", "active", ""),  # canceled before a result
]


@pytest.mark.parametrize(("hosts", "task", "state", "error"), RETIRE_CASES)
def test_a_retire_runs_outcome_on_its_machine(world, hosts, task, state, error):
    put(world, "active", 1, since=NOW - 3600)  # joined long ago
    world.ray.alive("cpu", 1, idle_s=61)  # past idle_timeout_minutes 1
    report = world.agent.iterate(NOW)
    (retire,) = [a for a in report.acted if a.kind == ActionKind.RETIRE]
    assert retire.ips == (CPU[0],)
    assert world.store.machine(CPU[0]).state == S.DRAINING
    run = world.runner.last()
    assert run.playbook == RETIRE_WORKERS
    assert run.extravars["worker_drain_reason"] == "idle"
    status = "canceled" if not hosts else "successful" if state == "spare" else "failed"
    world.runner.finish(run.request_id, status, hosts=hosts,
                        errors={CPU[0]: error} if error else {},
                        failed_tasks={CPU[0]: task} if task else {})
    if state == "active":
        world.ray.alive("cpu", 1, busy=True)  # busy now: the next decision leaves it alone
    else:
        world.ray.dead("cpu", 1)
    world.agent.iterate(NOW + 5)
    machine = world.store.machine(CPU[0])
    assert machine.state.value == state
    assert machine.last_error == error


def test_a_machine_gone_from_the_inventory_the_runner_cannot_reach_is_never_run_on(world):
    put(world, "active", 1, 2)
    world.ray.alive("cpu", 1, busy=True)
    world.ray.alive("cpu", 2, busy=True)
    world.agent.reconfigure(config(node_type("cpu", 1), idle_timeout_minutes=1))
    world.runner.pool = frozenset(CPU[:1])  # the new inventory, and no way to the other
    report = world.agent.iterate(NOW)
    assert world.runner.started == []
    assert world.store.machine(CPU[1]).state == S.ACTIVE
    assert any(line.startswith(f"{CPU[1]}: retire refused: not in the inventory")
               for line in report.held)


def test_a_machine_gone_from_the_inventory_is_drained_retired_then_forgotten(world):
    put(world, "active", 1, 2)
    world.ray.alive("cpu", 1, busy=True)
    world.ray.alive("cpu", 2, busy=True)
    world.agent.reconfigure(config(node_type("cpu", 1), idle_timeout_minutes=1))
    world.runner.reachable = frozenset({CPU[1]})
    world.agent.iterate(NOW)
    run = world.runner.last()
    assert (run.playbook, run.ips) == (RETIRE_WORKERS, (CPU[1],))
    assert run.extravars["worker_drain_reason"] == "preemption"  # busy, and going anyway
    world.runner.finish(run.request_id)
    world.ray.dead("cpu", 2)
    world.agent.iterate(NOW + 5)  # retired: spare, then forgotten as it left the inventory
    world.agent.iterate(NOW + 10)
    assert world.states() == {CPU[0]: "active"}
    assert world.store.run(run.request_id).outcome == "successful"


def test_a_removed_machine_still_in_the_pool_is_retired_with_preemption(world):
    put(world, "active", 1, 2)
    world.ray.alive("cpu", 1, busy=True)
    world.ray.alive("cpu", 2, busy=True)
    world.agent.reconfigure(config(node_type("cpu", 3, max_workers=1), idle_timeout_minutes=1))
    world.agent.iterate(NOW)
    run = world.runner.last()
    assert run.playbook == RETIRE_WORKERS
    assert len(run.ips) == 1
    assert run.extravars["worker_drain_reason"] == "preemption"
    assert world.states()[run.ips[0]] == "draining"


def test_ray_unavailable_decides_nothing_but_still_records_finished_runs(world, caplog):
    world.ray.want(1, CPU=4)
    world.agent.iterate(NOW)
    run = world.runner.last()
    world.runner.finish(run.request_id, "failed", hosts={CPU[0]: FAILED},
                        errors={CPU[0]: "boom"})
    world.ray.down = "connection refused"
    before = len(world.runner.started)
    with caplog.at_level(logging.WARNING, logger="onprem_ray_agent"):
        first = world.agent.iterate(NOW + 5)
        second = world.agent.iterate(NOW + 10)
    assert (first.ok, first.ray_error, first.decision) == (False, "connection refused", None)
    assert not second.ok
    assert len(world.runner.started) == before
    assert world.store.machine(CPU[0]).state == S.FAILED  # the run's result was recorded
    assert sum("cannot be asked" in r.getMessage() for r in caplog.records) == 1


def test_a_timeout_of_a_machine_in_a_running_run_is_left_to_the_run(world):
    world.ray.want(1, CPU=4)
    world.agent.iterate(NOW)
    run = world.runner.last()
    late = NOW + world.agent.config.provision_timeout_s + 1
    report = world.agent.iterate(late)
    assert world.store.machine(CPU[0]).state == S.JOINING
    assert any("provision_timeout" in line and run.request_id in line for line in report.held)
    world.runner.finish(run.request_id)  # ended, but the machine never showed up in Ray
    world.agent.iterate(late + 5)
    machine = world.store.machine(CPU[0])
    assert machine.state == S.FAILED
    assert "provision_timeout_s" in machine.last_error


def test_a_run_that_cannot_start_fails_its_machines_with_the_reason(world):
    world.runner.fail_start = "ansible-playbook: not found"
    world.ray.want(1, CPU=4)
    report = world.agent.iterate(NOW)
    assert report.started == ()
    machine = world.store.machine(CPU[0])
    assert machine.state == S.FAILED
    assert "ansible-playbook: not found" in machine.last_error
    assert world.store.runs(unfinished_only=True) == []


def test_infeasible_demand_is_logged_once_while_it_lasts(world, caplog):
    world.ray.want(1, GPU=1)
    with caplog.at_level(logging.WARNING, logger="onprem_ray_agent"):
        for step in range(3):
            world.agent.iterate(NOW + step)
        world.ray.want(0)
        world.agent.iterate(NOW + 3)
        world.ray.want(1, GPU=1)
        world.agent.iterate(NOW + 4)
    assert sum("infeasible" in r.getMessage() for r in caplog.records) == 2
    assert world.runner.started == []


def test_every_action_is_logged_with_its_reason(world, caplog):
    world.ray.want(1, CPU=4)
    with caplog.at_level(logging.INFO, logger="onprem_ray_agent"):
        report = world.agent.iterate(NOW)
    lines = [r.getMessage() for r in caplog.records]
    for action in report.acted:
        assert any(action.reason in line and action.kind.value in line for line in lines)


def test_dry_run_decides_and_changes_nothing(world, tmp_path):
    put(world, "spare", 1, 2, 3)
    world.ray.want(1, CPU=4)
    reader = StateStore.open_read_only(world.store.path)
    try:
        dry = Agent(world.agent.config, reader, world.ray, None, dry_run=True)
        report = dry.iterate(NOW)
    finally:
        reader.close()
    assert [a.kind for a in report.acted] == [ActionKind.ADD]
    assert report.dry_run
    assert world.states() == dict.fromkeys(CPU, "spare")
    assert world.store.runs() == []


def test_stop_cancels_the_running_playbook_and_records_it(world):
    world.ray.want(1, CPU=4)
    world.agent.iterate(NOW)
    run = world.runner.last()
    results = world.agent.stop(NOW + 1)
    assert world.runner.canceled == [run.request_id]
    assert [r.status for r in results] == ["canceled"]
    assert world.store.run(run.request_id).outcome == "canceled"
    assert world.metrics.runs == [(ADD_WORKERS, "canceled")]


def test_a_new_inventory_takes_effect_at_the_next_iteration(world):
    world.agent.iterate(NOW)
    assert set(world.states()) == set(CPU)
    world.agent.reconfigure(dataclasses.replace(world.agent.config,
                                                node_types=(node_type("cpu", 2),)))
    world.agent.iterate(NOW + 5)
    assert set(world.states()) == set(CPU[:2])
    assert HEAD not in world.states()


def test_an_add_no_demand_needs_is_canceled_and_its_machines_retired_to_spare(world):
    world.ray.want(2, CPU=4)
    world.agent.iterate(NOW)
    add = world.runner.last()
    assert add.ips == (CPU[0], CPU[1])
    world.ray.want(0)  # the job was canceled
    grace = world.agent.config.cancel_join_after_s
    world.agent.iterate(NOW + 5)  # demand gone since now: within the grace
    world.agent.iterate(NOW + 5 + grace - 1)
    assert world.runner.canceled == []
    report = world.agent.iterate(NOW + 5 + grace)
    (cancel,) = [a for a in report.acted if a.kind == ActionKind.CANCEL]
    assert (cancel.request_id, cancel.ips) == (add.request_id, (CPU[0], CPU[1]))
    assert world.runner.canceled == [add.request_id]
    assert world.states() == {CPU[0]: "joining", CPU[1]: "joining", CPU[2]: "spare"}

    # The run ends canceled: canceled, then retired at once, without a failure or a backoff.
    report = world.agent.iterate(NOW + 40)
    assert world.store.run(add.request_id).outcome == "canceled"
    retire = world.runner.last()
    assert (retire.playbook, retire.ips) == (RETIRE_WORKERS, (CPU[0], CPU[1]))
    assert report.started == (retire.request_id,)
    assert world.states() == {CPU[0]: "draining", CPU[1]: "draining", CPU[2]: "spare"}
    world.runner.finish(retire.request_id)
    world.agent.iterate(NOW + 45)
    assert world.states() == dict.fromkeys(CPU, "spare")
    for address in CPU[:2]:
        machine = world.store.machine(address)
        assert (machine.failures, machine.next_attempt_at, machine.last_error) == (0, 0.0, "")
    assert world.store.runs(unfinished_only=True) == []
    assert world.runner.canceled == [add.request_id]  # canceled once
    # No backoff: demand coming back adds them again at once.
    world.ray.want(1, CPU=4)
    world.agent.iterate(NOW + 50)
    assert (world.runner.last().playbook, world.runner.last().ips) == (ADD_WORKERS, (CPU[0],))


def test_a_cancel_is_asked_once_while_the_run_takes_seconds_to_end(world):
    world.runner.cancel_ends_run = False  # as ansible-runner: the run ends a few seconds later
    world.ray.want(2, CPU=4)
    world.agent.iterate(NOW)
    add = world.runner.last()
    world.ray.want(0)
    world.agent.iterate(NOW + 5)
    grace = world.agent.config.cancel_join_after_s
    acted = [world.agent.iterate(NOW + 5 + grace + s).acted for s in range(4)]
    cancels = [[a.request_id for a in step if a.kind == ActionKind.CANCEL] for step in acted]
    assert cancels == [[add.request_id], [], [], []]
    assert world.runner.canceled == [add.request_id]
    assert world.metrics.actions.get("cancel") == 2  # its two machines, once
    world.runner.finish(add.request_id, "canceled", hosts={})
    world.agent.iterate(NOW + 10 + grace)
    assert world.states() == {CPU[0]: "draining", CPU[1]: "draining", CPU[2]: "spare"}


def test_a_machine_alive_before_the_cancel_lands_is_simply_active(world):
    world.runner.cancel_ends_run = False
    world.ray.want(2, CPU=4)
    world.agent.iterate(NOW)
    add = world.runner.last()
    world.ray.want(0)
    world.agent.iterate(NOW + 5)
    world.agent.iterate(NOW + 5 + world.agent.config.cancel_join_after_s)
    assert world.runner.canceled == [add.request_id]
    world.ray.alive("cpu", 1)  # Ray started there before the cancel landed
    world.agent.iterate(NOW + 40)
    world.runner.finish(add.request_id, "canceled", hosts={})
    world.agent.iterate(NOW + 45)
    assert world.states() == {CPU[0]: "active", CPU[1]: "draining", CPU[2]: "spare"}
    assert world.store.machine(CPU[0]).failures == 0
    assert world.store.machine(CPU[1]).failures == 0
