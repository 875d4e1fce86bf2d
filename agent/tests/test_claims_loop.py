"""`up`'s claim (and its end, with its release) through the loop: the claim file as up_claim
writes it, the real store, fakes of Ray and the runner; and the hand-over files' rules (lock,
the agent's runs, a dead agent). The file stays while the claim is open, and holds `up`'s
workers from idle retirement, also across an agent's restart and a store made anew."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from ansible_collections.onprem.ray.plugins.module_utils import agent_claims
from decide_fixtures import NOW, config, ip, node_type
from loop_fakes import FakeRay, FakeRunner

from onprem_ray_agent.claims import ClaimBox
from onprem_ray_agent.loop import Agent
from onprem_ray_agent.model import MachineState
from onprem_ray_agent.store import StateStore

S = MachineState
CPU = [ip("cpu", i) for i in (1, 2, 3)]
CLAIM_ID = "up-1000000-0badc0de"


@pytest.fixture
def world(tmp_path):
    store = StateStore.open(tmp_path / "state.db")
    ray, runner = FakeRay(), FakeRunner(pool=frozenset(CPU))
    claims = ClaimBox(tmp_path)
    agent = Agent(config(node_type("cpu", 3), idle_timeout_minutes=1), store, ray, runner,
                  claims=claims)
    yield agent, store, ray, runner, claims, tmp_path
    store.close()


def write_claim(state_dir, *ips: str, at: float = NOW - 1) -> None:
    agent_claims.write_json(str(state_dir / agent_claims.CLAIM_FILE),
                            {"claim_id": CLAIM_ID, "at": at, "ips": list(ips)})


def test_the_first_start_with_demand_adds_only_what_up_did_not_start(world) -> None:
    agent, store, ray, runner, claims, state_dir = world
    write_claim(state_dir, CPU[0], CPU[1])  # before the agent ever ran: no store records
    ray.want(3, CPU=4)
    with claims.locked():
        agent.iterate(NOW)
        claims.publish(agent.busy())
    machines = store.machines()
    assert [(machines[a].state, machines[a].request_id) for a in CPU[:2]] == \
        [(S.JOINING, CLAIM_ID)] * 2
    (started,) = runner.started
    assert started.ips == (CPU[2],)
    # What up_claim reads under the lock: the agent's run has the third machine only.
    assert agent_claims.agent_runs(str(state_dir)) == {CPU[2]: started.request_id}
    ray.alive("cpu", 1, idle_s=9999)  # Ray's idle time counts from Ray's start there
    ray.alive("cpu", 2, idle_s=9999)
    agent.iterate(NOW + 30)
    agent.iterate(NOW + 40)
    machines = store.machines()
    for address in CPU[:2]:
        assert machines[address].state == S.ACTIVE
        assert machines[address].reason.startswith("seen ALIVE in Ray (started by up")
    assert len(runner.started) == 1  # nothing added for them, nothing retired as idle


def test_a_claim_file_that_cannot_be_read_is_ignored_and_said_once(world, caplog) -> None:
    agent, _, ray, runner, _, state_dir = world
    (state_dir / agent_claims.CLAIM_FILE).write_text("{not json")
    ray.want(1, CPU=4)
    agent.iterate(NOW)
    agent.iterate(NOW + 1)
    assert len(runner.started) == 1
    assert sum("up's claim" in r.message for r in caplog.records) == 1


def test_runs_of_an_agent_that_is_gone_block_no_claim(tmp_path) -> None:
    """A killed agent leaves runs-under-way.json behind: its runs ended with it."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    agent_claims.write_json(str(tmp_path / agent_claims.RUNS_FILE),
                            {"agent_pid": int(dead.stdout), "runs": {CPU[0]: "add-cpu-1"}})
    assert agent_claims.agent_runs(str(tmp_path)) == {}
    agent_claims.write_json(str(tmp_path / agent_claims.RUNS_FILE),
                            {"agent_pid": os.getpid(), "runs": {CPU[0]: "add-cpu-1"}})
    assert agent_claims.agent_runs(str(tmp_path)) == {CPU[0]: "add-cpu-1"}


def test_the_claim_lock_is_exclusive_and_waits_at_most_its_timeout(tmp_path) -> None:
    with agent_claims.locked(str(tmp_path)):
        started = time.monotonic()
        with pytest.raises(agent_claims.LockTimeout), \
                agent_claims.locked(str(tmp_path), timeout_s=0.5):
            pass
        waited = time.monotonic() - started
    assert 0.5 <= waited < 5.0, waited
    with agent_claims.locked(str(tmp_path), timeout_s=0.5):  # free again
        pass


def test_a_claim_lock_the_agent_cannot_open_stops_it_with_the_reason(tmp_path) -> None:
    from onprem_ray_agent.store import StoreError

    (tmp_path / agent_claims.LOCK_FILE).mkdir()  # not a file: cannot be opened as one
    with pytest.raises(StoreError, match=r"claim lock .* cannot be taken"), \
            ClaimBox(tmp_path).locked():
        pass


def end_claim(state_dir, *released: str, at: float | None = None) -> None:
    """`up`'s last task, as up_claim writes it: the claim ended, `released` out of its ips
    (written alone when the agent has removed the claim: `at` is then when)."""
    path = state_dir / agent_claims.CLAIM_FILE
    current = agent_claims.read_json(str(path)) or {"claim_id": CLAIM_ID, "at": at, "ips": []}
    agent_claims.write_json(str(path), dict(
        current, ips=sorted(set(current["ips"]) - set(released)), released=sorted(released),
        ended=True))


def fresh_agent(agent, state_dir, ray, runner, claims, name="fresh.db"):
    store = StateStore.open(state_dir / name)
    return Agent(agent.config, store, ray, runner, claims=claims), store


def test_an_open_claim_stays_and_an_ended_one_is_removed_once_applied(world) -> None:
    agent, store, _ray, _runner, claims, state_dir = world
    write_claim(state_dir, CPU[0])
    with claims.locked():
        agent.iterate(NOW)
        agent.iterate(NOW + 1)
    assert store.machine(CPU[0]).request_id == CLAIM_ID
    assert (state_dir / agent_claims.CLAIM_FILE).exists()  # up still runs
    end_claim(state_dir)
    with claims.locked():
        agent.iterate(NOW + 2)
    assert not (state_dir / agent_claims.CLAIM_FILE).exists()


def test_an_open_claim_past_the_provision_timeout_is_removed(world) -> None:
    agent, _store, _ray, _runner, claims, state_dir = world
    write_claim(state_dir, CPU[0], at=NOW - agent.config.provision_timeout_s - 1)
    with claims.locked():
        agent.iterate(NOW)
    assert not (state_dir / agent_claims.CLAIM_FILE).exists()


def test_a_store_made_anew_while_up_runs_is_claimed_but_not_once_up_ended(world) -> None:
    """A removed state file (or --rebuild-state) while `up` runs: the open claim still holds
    the machines `up` starts; once ended and removed, an old claim holds nothing."""
    agent, store, ray, runner, claims, state_dir = world
    write_claim(state_dir, CPU[0])
    with claims.locked():
        agent.iterate(NOW)
    assert store.machine(CPU[0]).request_id == CLAIM_ID
    ray.want(1, CPU=4)
    again, fresh = fresh_agent(agent, state_dir, ray, runner, claims)
    try:
        with claims.locked():
            again.iterate(NOW + 5)
        assert fresh.machine(CPU[0]).request_id == CLAIM_ID  # still up's
        assert runner.started == []  # it serves the demand: nothing added
    finally:
        fresh.close()
    end_claim(state_dir, CPU[0])  # up ended without it ALIVE
    with claims.locked():
        agent.iterate(NOW + 6)
    assert not (state_dir / agent_claims.CLAIM_FILE).exists()
    ray.want(0)
    last, fresh = fresh_agent(agent, state_dir, ray, runner, claims, "last.db")
    try:
        ray.want(1, CPU=4)
        with claims.locked():
            last.iterate(NOW + 7)
        assert fresh.machine(CPU[0]).request_id != CLAIM_ID
        assert sum(len(run.ips) for run in runner.started) == 1
    finally:
        fresh.close()


def test_a_worker_up_started_is_not_retired_as_idle_until_up_ends_its_claim(world) -> None:
    """The race of issue 14: a short idle timeout (60 s), `up` still waiting for other
    workers. The agent restarted meanwhile holds it too; once up ends, it retires."""
    agent, store, ray, runner, claims, state_dir = world
    write_claim(state_dir, CPU[0], CPU[1])
    with claims.locked():
        agent.iterate(NOW)
    ray.alive("cpu", 1, idle_s=9999)
    for now in (NOW + 10, NOW + 100, NOW + 200):  # idle 190 s since its join
        with claims.locked():
            agent.iterate(now)
    assert store.machine(CPU[0]).state == S.ACTIVE and runner.started == []
    restarted = Agent(agent.config, store, ray, runner, claims=claims)
    with claims.locked():
        report = restarted.iterate(NOW + 300)
    assert runner.started == [] and store.machine(CPU[0]).state == S.ACTIVE
    assert any("has not ended its claim" in note for note in report.decision.notes)
    end_claim(state_dir, CPU[1])  # the second never came up: released
    with claims.locked():
        restarted.iterate(NOW + 310)
    (retire,) = runner.started
    assert retire.ips == (CPU[0],) and retire.request_id.startswith("retire-")
    assert store.machine(CPU[1]).state == S.SPARE
    assert not (state_dir / agent_claims.CLAIM_FILE).exists()


def test_a_newer_claim_written_meanwhile_is_kept(world) -> None:
    _agent, _store, _ray, _runner, claims, state_dir = world
    write_claim(state_dir, CPU[0])
    claim = claims.read()
    agent_claims.write_json(str(state_dir / agent_claims.CLAIM_FILE),
                            {"claim_id": "up-1000001-00c0ffee", "at": NOW, "ips": [CPU[1]]})
    claims.consume(claim)
    assert claims.read().claim_id == "up-1000001-00c0ffee"



def test_workers_a_failed_up_releases_are_spare_at_once_and_the_demand_is_added(world) -> None:
    """`up` claimed two workers and ended with the first not ALIVE: the agent adds a machine
    for the demand at its next iteration, not provision_timeout_s later, and counts no
    failure; the second, ALIVE, joins as started by up."""
    agent, store, ray, runner, claims, state_dir = world
    write_claim(state_dir, CPU[0], CPU[1], at=NOW - 1)
    ray.want(1, CPU=4)  # what the first will serve once ALIVE
    with claims.locked():
        agent.iterate(NOW)
    ray.alive("cpu", 2, busy=True)  # the second is ALIVE, busy with other work
    for now in (NOW + 10, NOW + 20):  # held: up is still starting the first
        agent.iterate(now)
    assert runner.started == [] and store.machine(CPU[0]).state == S.JOINING
    # up's last task ends the claim (still there: it was open), releasing the first
    assert (state_dir / agent_claims.CLAIM_FILE).exists()
    end_claim(state_dir, CPU[0])
    report = agent.iterate(NOW + 30)
    (release,) = [a for a in report.acted if a.event.value == "claim_released"]
    assert release.ips == (CPU[0],)
    assert release.reason.startswith(f"up (claim {CLAIM_ID}) ended without it ALIVE")
    assert (store.machine(CPU[0]).failures, store.machine(CPU[0]).last_error) == (0, "")
    (started,) = runner.started
    assert len(started.ips) == 1 and CPU[1] not in started.ips
    assert store.machine(started.ips[0]).state == S.JOINING
    assert store.machine(CPU[1]).state == S.ACTIVE
    assert not (state_dir / agent_claims.CLAIM_FILE).exists()  # ended and applied


def test_a_claim_file_with_a_release_that_is_no_list_is_refused(tmp_path) -> None:
    claims = ClaimBox(tmp_path)
    agent_claims.write_json(str(tmp_path / agent_claims.CLAIM_FILE),
                            {"claim_id": CLAIM_ID, "at": NOW, "ips": [], "released": CPU[0]})
    assert claims.read() is None
    agent_claims.write_json(str(tmp_path / agent_claims.CLAIM_FILE),
                            {"claim_id": CLAIM_ID, "at": NOW, "ips": [], "released": [CPU[0]]})
    assert claims.read().released == frozenset({CPU[0]})
    assert not claims.read().ended
    agent_claims.write_json(str(tmp_path / agent_claims.CLAIM_FILE),
                            {"claim_id": CLAIM_ID, "at": NOW, "ips": [], "ended": "yes"})
    assert claims.read() is None
    agent_claims.write_json(str(tmp_path / agent_claims.CLAIM_FILE),
                            {"claim_id": CLAIM_ID, "at": NOW, "ips": [], "ended": True})
    assert claims.read().ended
