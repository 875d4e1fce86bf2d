"""Fakes of Ray and of the playbook runner for the loop's tests (the store is the real one).

FakeRunner keeps the runs' "artifacts" in a dict that outlives one agent, as the disk does, so
that restart tests can hand it to the next agent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

from decide_fixtures import HEAD, RESOURCES, ip

from onprem_ray_agent.adapters.ray_state import RayUnavailable
from onprem_ray_agent.adapters.runner import OK, PoolViolation, RunResult
from onprem_ray_agent.loop import Agent
from onprem_ray_agent.model import BundleDemand, DemandSnapshot, RayNode, RayNodeState
from onprem_ray_agent.store import StateStore


def _node(address: str, total: dict, idle_s: float, alive: bool, free: dict | None = None,
          ) -> RayNode:
    return RayNode(
        node_id=f"id-{address}", ip=address,
        state=RayNodeState.ALIVE if alive else RayNodeState.DEAD, is_head=address == HEAD,
        total=MappingProxyType(dict(total)),
        available=MappingProxyType(dict(total if free is None else free)), idle_s=idle_s)


class FakeRay:
    """Ray's GCS: a head, the workers set ALIVE (or DEAD), pending bundles."""

    def __init__(self) -> None:
        self.nodes: dict[str, RayNode] = {HEAD: _node(HEAD, {}, 0.0, True)}
        self.pending: list[BundleDemand] = []
        self.down = ""  # an error text: the GCS does not answer

    def alive(self, name: str, i: int, idle_s: float = 0.0, busy: bool = False) -> None:
        total = RESOURCES[name]
        free = dict.fromkeys(total, 0.0) if busy else None
        self.nodes[ip(name, i)] = _node(ip(name, i), total, idle_s, True, free)

    def dead(self, name: str, i: int) -> None:
        self.nodes[ip(name, i)] = _node(ip(name, i), RESOURCES[name], 0.0, False)

    def restarted(self, *alive: tuple[str, int]) -> None:
        """The head's Ray started again: a new, empty GCS that the head and the given
        workers registered with; no other node, not even DEAD."""
        self.nodes = {HEAD: _node(HEAD, {}, 0.0, True)}
        for name, i in alive:
            self.alive(name, i)

    def want(self, count: int, **shape: float) -> None:
        self.pending = [BundleDemand(MappingProxyType(dict(shape)), count)] if count else []

    def snapshot(self) -> DemandSnapshot:
        if self.down:
            raise RayUnavailable(self.down)
        return DemandSnapshot(pending=tuple(self.pending), nodes=tuple(self.nodes.values()))


@dataclass
class Started:
    request_id: str
    playbook: str
    ips: tuple[str, ...]
    extravars: dict
    timeout_s: float | None


@dataclass
class FakeRunner:
    """Runs nothing: tests end runs with `finish`. Refuses what the real adapter refuses."""

    pool: frozenset[str] = frozenset()
    artifacts: dict[str, RunResult] = field(default_factory=dict)  # outlives an agent
    started: list[Started] = field(default_factory=list)
    fail_start: str = ""
    reachable: frozenset[str] = frozenset()  # gone from the inventory, reachable to retire
    _running: dict[str, Started] = field(default_factory=dict)
    _done: list[RunResult] = field(default_factory=list)
    canceled: list[str] = field(default_factory=list)
    cancel_ends_run: bool = True  # False: a cancel lands later, when the test finishes the run

    def start(self, request_id, playbook, ips, extravars=None, timeout_s=None) -> None:
        ips = tuple(ips)
        if self.fail_start:
            raise OSError(self.fail_start)
        allowed = self.pool | (self.reachable if playbook.endswith("retire_workers") else set())
        outside = [address for address in ips if address not in allowed]
        if outside:
            raise PoolViolation(f"not in the pool: {outside}")
        busy = {address for run in self._running.values() for address in run.ips}
        assert not busy & set(ips), f"{sorted(busy & set(ips))} already in a running run"
        run = Started(request_id, playbook, ips, dict(extravars or {}), timeout_s)
        self.started.append(run)
        self._running[request_id] = run

    def finish(self, request_id: str, status: str = "successful", hosts: dict | None = None,
               errors: dict | None = None, failed_tasks: dict | None = None) -> RunResult:
        run = self._running.pop(request_id)
        result = RunResult(
            request_id=request_id, playbook=run.playbook, ips=run.ips, status=status,
            rc=0 if status == "successful" else 2,
            hosts=dict.fromkeys(run.ips, OK) if hosts is None else hosts,
            errors=errors or {}, failed_tasks=failed_tasks or {}, duration_s=3.0)
        self.artifacts[request_id] = result
        self._done.append(result)
        return result

    def reach(self, address: str, node_type: str) -> bool:
        return address in self.pool or address in self.reachable

    def wait(self, timeout_s: float) -> bool:
        return not self._running

    def set_pool(self, pool, inventory=None, leaving_hostvars=None) -> None:
        self.pool = frozenset(pool)

    def poll(self) -> list[RunResult]:
        done, self._done = self._done, []
        return done

    def running(self) -> list[str]:
        return sorted(self._running)

    def cancel(self, request_id: str) -> None:
        if request_id in self._running:
            self.canceled.append(request_id)
            if self.cancel_ends_run:
                self.finish(request_id, status="canceled", hosts={})

    def cancel_all(self) -> None:
        for request_id in self.running():
            self.cancel(request_id)

    def recorded(self, request_id: str) -> RunResult | None:
        return self.artifacts.get(request_id)

    def last(self) -> Started:
        return self.started[-1]


@dataclass
class FakeMetrics:
    actions: dict[str, int] = field(default_factory=dict)
    runs: list[tuple[str, str]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    iterations: int = 0

    def action(self, kind: str, count: int) -> None:
        self.actions[kind] = self.actions.get(kind, 0) + count

    def run_finished(self, playbook: str, outcome: str, duration_s) -> None:
        self.runs.append((playbook, outcome))

    def scale_up_latency(self, seconds: float) -> None:
        self.latencies.append(seconds)

    def iteration(self, report, machines, config) -> None:
        self.iterations += 1


@dataclass
class World:
    """An agent over a real state store, with the fakes of Ray and the runner."""

    agent: Agent
    store: StateStore
    ray: FakeRay
    runner: FakeRunner

    def restart_agent(self) -> None:
        """A new agent process on the same store: what the old one kept in memory is gone."""
        self.agent = Agent(self.agent.config, self.store, self.ray, self.runner)
