"""The agent never acts on an address outside its pool, even when a crafted state store or
Ray's node list names one: through the loop (fakes of Ray, the real store, a runner that would
run anything, so that only the loop's own checks stand in the way) and at the real
ansible-runner adapter."""

from __future__ import annotations

import sys
import textwrap

import pytest
from decide_fixtures import NOW, config, ip, node_type
from loop_fakes import FakeRay, FakeRunner, _node

from onprem_ray_agent.adapters.runner import (
    ADD_WORKERS,
    RETIRE_WORKERS,
    AnsibleRunner,
    PoolViolation,
)
from onprem_ray_agent.loop import Agent
from onprem_ray_agent.model import Machine, MachineState
from onprem_ray_agent.store import StateStore

CPU = [ip("cpu", i) for i in (1, 2, 3)]
OUTSIDE = "10.66.0.9"
# Names a crafted record could carry to reach --limit or a shell.
UNSAFE = ["all", f"{CPU[0]},{OUTSIDE}", "10.0.1.*", "!10.0.1.1", "$(reboot)", "-e x=1",
          "10.0.1.1 10.66.0.9", "~.*"]


class AnyRunner(FakeRunner):
    """Runs whatever it is asked to, and says it can reach anything: the loop alone refuses."""

    def start(self, request_id, playbook, ips, extravars=None, timeout_s=None) -> None:
        self.pool = self.pool | set(ips)
        super().start(request_id, playbook, ips, extravars, timeout_s)

    def reach(self, address: str, node_type: str) -> bool:
        return True


def named(runner: FakeRunner, address: str) -> list[tuple[str, tuple[str, ...]]]:
    return [(run.playbook, run.ips) for run in runner.started if address in run.ips]


def drive(store: StateStore, ray: FakeRay, runner: FakeRunner, iterations: int = 8) -> None:
    """Iterations far apart (past every timeout and backoff), each run ended successfully."""
    agent = Agent(config(node_type("cpu", 3), idle_timeout_minutes=1), store, ray, runner)
    agent.reconcile(NOW)
    for k in range(iterations):
        agent.iterate(NOW + 1000 * k)
        for request_id in runner.running():
            runner.finish(request_id)


@pytest.fixture
def store(tmp_path):
    opened = StateStore.open(tmp_path / "state.db")
    yield opened
    opened.close()


def test_a_ray_node_outside_the_pool_is_never_recorded_nor_run_on(store):
    ray, runner = FakeRay(), AnyRunner(pool=frozenset(CPU))
    ray.nodes[OUTSIDE] = _node(OUTSIDE, {"CPU": 4}, 10_000.0, True)  # idle for hours
    ray.want(3, CPU=4)
    drive(store, ray, runner)
    assert len(runner.started) >= 1  # the demand was served from the pool
    assert named(runner, OUTSIDE) == []
    assert store.machine(OUTSIDE) is None


@pytest.mark.parametrize("state", list(MachineState))
@pytest.mark.parametrize("in_ray", [False, True], ids=["not-in-ray", "alive-in-ray"])
def test_a_crafted_record_outside_the_pool_is_never_added(store, state, in_ray):
    store.put(Machine(OUTSIDE, "cpu", state, NOW - 600, request_id="crafted"))
    ray, runner = FakeRay(), AnyRunner(pool=frozenset(CPU))
    if in_ray:
        ray.nodes[OUTSIDE] = _node(OUTSIDE, {"CPU": 4}, 0.0, True)
    ray.want(5, CPU=4)  # more demand than the pool holds
    drive(store, ray, runner)
    assert any(run.playbook == ADD_WORKERS for run in runner.started)
    assert [run for run in named(runner, OUTSIDE) if run[0] != RETIRE_WORKERS] == []


@pytest.mark.parametrize("name", UNSAFE)
@pytest.mark.parametrize("state", ["spare", "active", "draining", "failed"])
def test_a_crafted_record_with_an_unsafe_name_never_reaches_a_run(tmp_path, store, name,
                                                                    state):
    """With the real adapter: a name that is not a plain host is never made reachable."""
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("".join(f"{address}\n" for address in CPU))
    runner = AnsibleRunner(tmp_path / "runner", inventory, CPU,
                           leaving_hostvars=lambda address, node_type: {"ansible_user": "x"})
    started = []
    runner.start = lambda *args, **kwargs: started.append(args)  # record, run nothing
    store.put(Machine(name, "cpu", MachineState(state), NOW - 600))
    ray = FakeRay()
    ray.nodes[name] = _node(name, {"CPU": 4}, 10_000.0, True)
    Agent(config(node_type("cpu", 3), idle_timeout_minutes=1), store, ray, runner
          ).iterate(NOW)
    assert [args for args in started if name in args[2]] == []
    assert runner._leaving == {}


def test_a_crafted_record_outside_the_pool_that_ray_does_not_list_is_never_run_on(store):
    store.put(Machine(OUTSIDE, "cpu", MachineState.ACTIVE, NOW - 600, request_id="crafted"))
    runner = AnyRunner(pool=frozenset(CPU))
    drive(store, FakeRay(), runner)
    assert named(runner, OUTSIDE) == []


# ---------------------------------------------------------------- the real adapter


@pytest.fixture
def adapter(tmp_path):
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(textwrap.dedent(f"""
        {CPU[0]} ansible_connection=local ansible_python_interpreter={sys.executable}
    """))
    return AnsibleRunner(tmp_path / "runner", inventory, [CPU[0]],
                         leaving_hostvars=lambda address, node_type: {"ansible_user": "x"})


@pytest.mark.parametrize("ips", [
    [OUTSIDE], [CPU[0], OUTSIDE], [f"{CPU[0]},{OUTSIDE}"], [f"{CPU[0]}:22"], ["all"],
    [" " + CPU[0]], [CPU[0].replace(".", "\u2024")],
])
@pytest.mark.parametrize("playbook", [ADD_WORKERS, RETIRE_WORKERS])
def test_the_adapter_refuses_an_address_outside_its_pool(adapter, ips, playbook):
    with pytest.raises(PoolViolation):
        adapter.start("crafted", playbook, ips)
    assert adapter.running() == []
    assert not (adapter.private_data_dir / "artifacts" / "crafted").exists()


def test_a_departed_address_made_reachable_is_still_never_added(adapter):
    assert adapter.reach(OUTSIDE, "cpu")
    with pytest.raises(PoolViolation, match=OUTSIDE):
        adapter.start("add-outside", ADD_WORKERS, [OUTSIDE])
    for name in UNSAFE:
        assert not adapter.reach(name, "cpu")
    assert list(adapter._leaving) == [OUTSIDE]


@pytest.mark.parametrize("request_id", ["../../etc", "a b", "$(id)", "-v", ""])
def test_the_adapter_refuses_a_crafted_request_id(adapter, request_id):
    with pytest.raises(ValueError, match="not a safe ident"):
        adapter.start(request_id, ADD_WORKERS, [CPU[0]])
    assert adapter.running() == []
