"""An agent killed before, during and after a playbook run; the next one reconciles.

"Killed" = the Agent object is dropped without any cleanup and its store closed (the process's
descriptors close when it dies, which releases the lock and rolls back an open transaction).
The runner's artifacts outlive it, as files on disk do; its running playbooks die with it.
"""

from __future__ import annotations

import contextlib

import pytest
from decide_fixtures import NOW, config, ip, node_type
from loop_fakes import FakeRay, FakeRunner

from onprem_ray_agent.adapters.runner import OK
from onprem_ray_agent.loop import Agent
from onprem_ray_agent.model import MachineState
from onprem_ray_agent.store import StateStore, StoreLocked

S = MachineState
CPU = [ip("cpu", i) for i in (1, 2, 3)]
CONFIG = config(node_type("cpu", 3), idle_timeout_minutes=1, provision_timeout_s=60,
                backoff_base_s=10, backoff_max_s=20)
RUN_TAKES_S = 10.0
STEP_S = 5.0


class Killed(BaseException):
    """The agent's process dies here."""


class Cluster:
    """Ray and the machines: an add that ends well starts Ray there, a retire stops it."""

    def __init__(self) -> None:
        self.ray = FakeRay()
        self.artifacts: dict = {}
        self.runner = FakeRunner(pool=frozenset(CPU), artifacts=self.artifacts)
        self.started_at: dict[str, float] = {}

    def new_runner(self) -> FakeRunner:
        """After a kill: the playbooks died with the agent, their artifacts stayed."""
        self.runner = FakeRunner(pool=frozenset(CPU), artifacts=self.artifacts)
        return self.runner

    def advance(self, now: float, busy: bool) -> None:
        for run in list(self.runner.started):
            if run.request_id not in self.runner.running():
                continue
            self.started_at.setdefault(run.request_id, now)
            if now - self.started_at[run.request_id] < RUN_TAKES_S:
                continue
            self.runner.finish(run.request_id, hosts=dict.fromkeys(run.ips, OK))
            for address in run.ips:
                index = CPU.index(address) + 1
                if run.playbook.endswith("add_workers"):
                    self.ray.alive("cpu", index, busy=busy)
                else:
                    self.ray.dead("cpu", index)
        for address, node in list(self.ray.nodes.items()):
            if address in CPU and node.state == "ALIVE":
                index = CPU.index(address) + 1
                idle = 0.0 if busy else node.idle_s + STEP_S
                self.ray.alive("cpu", index, idle_s=idle, busy=busy)


def check(store: StateStore, runner: FakeRunner, now: float) -> None:
    """No machine double-booked, leaked into a run the store does not know, or lost."""
    unfinished = store.runs(limit=10_000, unfinished_only=True)
    booked = [address for run in unfinished for address in run.ips]
    assert len(booked) == len(set(booked)), f"an IP is in two runs: {unfinished}"
    assert set(runner.running()) <= {run.request_id for run in unfinished}
    machines = store.machines()
    if machines:
        assert set(machines) == set(CPU), "a machine of the inventory has no record"
    for machine in machines.values():
        if machine.state == S.JOINING:
            assert now - machine.since <= CONFIG.provision_timeout_s + RUN_TAKES_S + STEP_S, \
                f"{machine.ip} joining for {now - machine.since:.0f} s"


def started(tmp_path) -> tuple[Cluster, StateStore, Agent]:
    cluster = Cluster()
    store = StateStore.open(tmp_path / "state.db")
    return cluster, store, Agent(CONFIG, store, cluster.ray, cluster.runner)


def restarted(tmp_path, store: StateStore, cluster: Cluster) -> tuple[StateStore, Agent]:
    """The agent's process died (its store closes with it); a new one opens the same store."""
    store.close()
    store = StateStore.open(tmp_path / "state.db")
    return store, Agent(CONFIG, store, cluster.ray, cluster.new_runner())


def drive(tmp_path, kill_at: int | None, where: str) -> tuple[StateStore, Cluster]:
    """A burst of demand for two machines, then none; the agent killed at one iteration."""
    cluster, store, agent = started(tmp_path)
    for index in range(120):
        now = NOW + index * STEP_S
        busy = index < 12
        cluster.ray.want(2 if busy else 0, CPU=4)
        cluster.advance(now, busy)
        if index == kill_at and where == "starting a run":
            def die(*args, **kwargs):
                raise Killed
            cluster.runner.start = die
        with contextlib.suppress(Killed):
            agent.iterate(now)
        if index == kill_at:
            store, agent = restarted(tmp_path, store, cluster)  # nothing of the old one runs
            agent.reconcile(now)
        check(store, cluster.runner, now)
    return store, cluster


@pytest.mark.parametrize("where", ["after an iteration", "starting a run"])
# Iterations 0 and 3 start adds, 24 a retire; each run takes two more iterations.
@pytest.mark.parametrize("kill_at", [None, 0, 1, 2, 3, 4, 5, 6, 24, 25, 26, 27, 30])
def test_killed_at_any_iteration_the_pool_settles_with_nothing_lost(tmp_path, kill_at, where):
    store, cluster = drive(tmp_path, kill_at, where)
    try:
        # long after the demand ended: everything went back to spare, Ray runs no worker
        machines = store.machines()
        assert {m.ip: m.state for m in machines.values()} == dict.fromkeys(CPU, S.SPARE)
        assert store.runs(limit=10_000, unfinished_only=True) == []
        alive = [a for a, n in cluster.ray.nodes.items() if a in CPU and n.state == "ALIVE"]
        assert alive == []
        # and it did scale up for the demand
        adds = [r for r in store.runs(limit=10_000) if r.kind == "add"]
        assert adds, "no machine was ever added"
    finally:
        store.close()


def test_a_second_agent_on_the_same_store_is_refused(tmp_path):
    store = StateStore.open(tmp_path / "state.db")
    try:
        with pytest.raises(StoreLocked, match="only one agent"):
            StateStore.open(tmp_path / "state.db")
    finally:
        store.close()


def test_a_run_that_ended_while_no_agent_watched_is_read_back(tmp_path):
    cluster, store, agent = started(tmp_path)
    cluster.ray.want(2, CPU=4)
    agent.iterate(NOW)
    run = cluster.runner.last()
    # the playbook ends (one host failed) after the agent died, before it could poll
    cluster.runner.finish(run.request_id, "failed", hosts={CPU[0]: OK, CPU[1]: "failed"},
                          errors={CPU[1]: "Install Ray: no space left on device"})
    store, agent = restarted(tmp_path, store, cluster)
    try:
        (result,) = agent.reconcile(NOW + 30)
        assert result.status == "failed"
        assert store.run(run.request_id).outcome == "failed"
        failed = store.machine(CPU[1])
        assert failed.state == S.FAILED
        assert "no space left" in failed.last_error
        assert store.machine(CPU[0]).state == S.JOINING  # until Ray lists it
        cluster.ray.alive("cpu", 1, busy=True)
        agent.iterate(NOW + 35)
        assert store.machine(CPU[0]).state == S.ACTIVE
    finally:
        store.close()


def test_an_add_lost_with_the_agent_fails_the_machines_ray_does_not_list(tmp_path):
    cluster, store, agent = started(tmp_path)
    cluster.ray.want(2, CPU=4)
    agent.iterate(NOW)
    run = cluster.runner.last()
    store, agent = restarted(tmp_path, store, cluster)
    cluster.ray.alive("cpu", 1, busy=True)  # the playbook got that far on one machine
    try:
        (result,) = agent.reconcile(NOW + 20)
        assert result.status == "interrupted"
        assert store.run(run.request_id).outcome == "interrupted"
        agent.iterate(NOW + 20)
        # The one Ray lists is adopted; the other is tried again after its backoff, not held
        # for the provision timeout.
        assert store.machine(CPU[0]).state == S.ACTIVE
        assert store.machine(CPU[0]).failures == 0
        lost = store.machine(CPU[1])
        assert lost.state == S.FAILED and "ended interrupted" in lost.reason
        assert lost.next_attempt_at == NOW + 20 + CONFIG.backoff.delay(1)
    finally:
        store.close()


def test_a_retire_lost_with_the_agent_puts_the_machine_back_to_active(tmp_path):
    cluster, store, agent = started(tmp_path)
    agent.iterate(NOW)
    store.put(store.machine(CPU[0]).__class__(ip=CPU[0], node_type="cpu", state=S.ACTIVE,
                                              since=NOW - 3600))
    cluster.ray.alive("cpu", 1, idle_s=120)
    agent.iterate(NOW + 5)
    assert store.machine(CPU[0]).state == S.DRAINING
    store, agent = restarted(tmp_path, store, cluster)
    try:
        agent.reconcile(NOW + 10)
        machine = store.machine(CPU[0])
        assert machine.state == S.ACTIVE
        assert "interrupted" in machine.reason
        assert store.runs(unfinished_only=True) == []
    finally:
        store.close()
