"""The simulation: a simulated Ray and simulated playbooks around the agent's real decision.

Every `interval_s` (the agent's loop interval) the simulated agent builds the snapshot Ray's
GCS would give, calls `policy.decide` and applies its actions with `transitions`, as
`loop.Agent` does: bookkeeping at once, an add or a retire as a playbook run whose latency is
drawn from `sim.latency`. An iteration is skipped when nothing it reads has changed since the
last one and no time limit (idle timeout, provision timeout, backoff, drain deadline) falls
due: `decide` is pure, so that iteration would decide what the last one did, nothing
(`every_tick=True` calls it every interval, to check that).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from onprem_ray_agent import transitions
from onprem_ray_agent.model import ActionKind, Config, Event, Machine, MachineState
from onprem_ray_agent.policy import decide
from sim.latency import Latencies
from sim.ray import Needs, Node, NodeTypeSpec, SimRay
from sim.trace import Work

S = MachineState
FLAP_WINDOW_S = 600.0  # a machine retired and added again within this is a flap
SAMPLE_S = 60.0  # time series resolution for the plots

_ARRIVE, _FINISH, _ALIVE, _DRAIN, _GONE = range(5)


@dataclass
class Result:
    """What one simulated day gave."""

    label: str
    types: list[str]
    waits: list[tuple[float, int]] = field(default_factory=list)  # (wait s, units)
    unserved: list[tuple[float, int]] = field(default_factory=list)  # censored at the end
    machine_seconds: dict[str, float] = field(default_factory=dict)
    adds: int = 0
    retires: int = 0
    drains_refused: int = 0
    flaps: int = 0
    decide_calls: int = 0
    ticks: int = 0
    max_on: dict[str, int] = field(default_factory=dict)
    max_on_total: int = 0
    oracle_machine_seconds: dict[str, float] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)  # sample instants
    on: dict[str, list[int]] = field(default_factory=dict)  # machines on, per type
    wanted: dict[str, list[float]] = field(default_factory=dict)  # demand, in machines
    actions: list[tuple[float, str, str, tuple[str, ...]]] = field(default_factory=list)
    end_s: float = 0.0


class Simulation:
    """One run of `works` against `config`. `all_on`: every machine ALIVE from the start and
    no agent (the reference that also yields the oracle's lower bound)."""

    def __init__(self, config: Config, works: Sequence[Work], *, label: str = "",
                 latencies: Latencies | None = None, seed: int = 0, interval_s: float = 5.0,
                 horizon_s: float = 24 * 3600.0, all_on: bool = False,
                 every_tick: bool = False, finish_work: bool = False,
                 record_actions: bool = False) -> None:
        self.config = config
        self.works = works
        self.latencies = latencies or Latencies()
        self.rng = random.Random(seed)  # noqa: S311 - reproducible simulation
        self.interval_s = interval_s
        self.horizon_s = horizon_s
        self.all_on = all_on
        self.every_tick = every_tick
        self.finish_work = finish_work  # run past the horizon until all work is done
        self.record_actions = record_actions
        specs = [NodeTypeSpec(t.name, t.resources, tuple(ip for ip in t.ips
                                                         if ip != config.head_ip))
                 for t in config.node_types]
        self.type_names = [t.name for t in specs]
        self.result = Result(label, self.type_names)
        self.ray = SimRay(config.head_ip, specs, self._on_run, self._on_wait)
        self.records: dict[str, Machine] = {}
        self.events: list[tuple[float, int, int, object]] = []
        self._seq = itertools.count()
        self.dirty = True
        self.wake = math.inf
        self.on_since: dict[str, float] = {}
        self.on_count = [0] * len(specs)
        self.last_gone: dict[str, float] = {}
        self.runs: dict[str, str] = {}  # ip -> request id of its running retire
        self.now = 0.0

    # ------------------------------------------------------------ events

    def _push(self, t: float, kind: int, payload: object) -> None:
        heapq.heappush(self.events, (t, next(self._seq), kind, payload))

    def _on_run(self, end: float, node: Node, needs: Needs, count: int) -> None:
        self._push(end, _FINISH, (node, needs, count))

    def _on_wait(self, wait_s: float, units: int) -> None:
        self.result.waits.append((wait_s, units))

    def run(self) -> Result:
        result = self.result
        for work in self.works:
            self._push(work.t, _ARRIVE, work)
        if self.all_on:
            for spec in self.ray.types:
                for ip in spec.ips:
                    self.ray.add_node(ip, 0.0)
                    self._machine_on(ip, 0.0)
        next_tick = 0.0 if not self.all_on else math.inf
        next_sample = 0.0
        end = self.horizon_s
        while True:
            t_event = self.events[0][0] if self.events else math.inf
            t = min(t_event, next_tick, next_sample)
            if t > end:
                if self.finish_work and (self.events or self.ray.waiting_units()):
                    end = t
                else:
                    break
            self.now = t
            if t == next_sample:
                self._sample(t)
                next_sample += SAMPLE_S
            elif t == next_tick:
                result.ticks += 1
                if self.every_tick or self.dirty or t >= self.wake:
                    self._iterate(t)
                next_tick += self.interval_s
            else:
                _, _, kind, payload = heapq.heappop(self.events)
                self._event(kind, payload, t)
        self._close(end)
        return result

    def _event(self, kind: int, payload, t: float) -> None:
        ray = self.ray
        if kind == _ARRIVE:
            if ray.submit(payload, t):
                self.dirty = True
        elif kind == _FINISH:
            node, needs, count = payload
            waiting = ray.waiting_units()
            ray.finish(node, needs, count, t)
            if node.chunks == 0 and node.ip in ray.nodes:
                self.wake = min(self.wake, t + self.config.idle_timeout_s + 1e-6)
            if waiting:
                self.dirty = True  # free capacity, or less waiting work: the plan changes
        elif kind == _ALIVE:
            ray.add_node(payload, t)
            self.wake = min(self.wake, t + self.config.idle_timeout_s + 1e-6)
            self.dirty = True
        elif kind == _DRAIN:
            ip, request_id = payload
            if ray.drain(ip):
                self._push(t + max(0.1, self.latencies.gone.draw(self.rng) -
                                   (t - self.records[ip].since)), _GONE, payload)
            else:  # Ray refused: the node got work since; the run fails before its drain
                self.result.drains_refused += 1
                self._run_ended(ip, request_id, (Event.DRAIN_FAILED,), t)
        elif kind == _GONE:
            ip, request_id = payload
            ray.remove_node(ip)
            self._machine_off(ip, t)
            self.result.retires += 1
            self._run_ended(ip, request_id, (Event.DRAINED, Event.RETIRED), t)

    def _run_ended(self, ip: str, request_id: str, events: tuple[Event, ...], t: float) -> None:
        self.runs.pop(ip, None)
        machine = self.records.get(ip)
        if machine is None or machine.request_id != request_id:
            return
        for event in events:
            machine = transitions.apply(machine, event, t, reason="run ended",
                                        backoff=self.config.backoff)
        self.records[ip] = machine
        self.dirty = True

    # ------------------------------------------------------------ the agent

    def _iterate(self, now: float) -> None:
        snapshot = self.ray.snapshot(now)
        decision = decide(self.config, self.records.values(), snapshot, now)
        self.result.decide_calls += 1
        self.dirty = bool(decision.actions)
        for action in decision.actions:
            self._apply(action, now)
        self._next_wake(now)

    def _apply(self, action, now: float) -> None:
        kind, records, backoff = action.kind, self.records, self.config.backoff
        if self.record_actions:
            self.result.actions.append((now, kind.value, action.event.value, action.ips))
        for ip in action.ips:
            if kind == ActionKind.ADMIT:
                records[ip] = transitions.admit(ip, action.node_type, now, action.reason)
            elif kind == ActionKind.FORGET:
                del records[ip]
            elif kind == ActionKind.MARK:
                records[ip] = transitions.apply(records[ip], action.event, now,
                                                reason=action.reason, backoff=backoff)
            elif ip in self.runs:  # the loop never puts a machine in two runs
                continue
            else:
                records[ip] = transitions.apply(records[ip], action.event, now,
                                                reason=action.reason, backoff=backoff,
                                                request_id=action.request_id)
                if kind == ActionKind.ADD:
                    self.result.adds += 1
                    if now - self.last_gone.get(ip, -math.inf) <= FLAP_WINDOW_S:
                        self.result.flaps += 1
                    self._machine_on(ip, now)
                    self._push(now + self.latencies.add(self.rng), _ALIVE, ip)
                else:
                    self.runs[ip] = action.request_id
                    self._push(now + self.latencies.drain(self.rng), _DRAIN,
                               (ip, action.request_id))

    def _next_wake(self, now: float) -> None:
        config, wake = self.config, math.inf
        for machine in self.records.values():
            state = machine.state
            if state == S.JOINING:
                wake = min(wake, machine.since + config.provision_timeout_s + 1e-6)
            elif state == S.FAILED:
                wake = min(wake, machine.next_attempt_at)
            elif state == S.DRAINING:
                wake = min(wake, machine.since + config.drain_deadline_s + 1e-6)
        for node in self.ray.nodes.values():
            if node.idle_since is not None and not node.draining:
                # idle counts from the later of Ray's idle start and the agent's join
                record = self.records.get(node.ip)
                joined = record.since if record is not None and record.state == S.ACTIVE \
                    else node.idle_since
                threshold = max(node.idle_since, joined) + config.idle_timeout_s + 1e-6
                # a node kept past its timeout (min_workers, demand) is decided again on change
                if threshold > now:
                    wake = min(wake, threshold)
        self.wake = wake

    # ------------------------------------------------------------ accounting

    def _machine_on(self, ip: str, now: float) -> None:
        self.on_since[ip] = now
        type_index = self.ray.type_of_ip[ip]
        self.on_count[type_index] += 1
        name = self.type_names[type_index]
        result = self.result
        result.max_on[name] = max(result.max_on.get(name, 0), self.on_count[type_index])
        result.max_on_total = max(result.max_on_total, sum(self.on_count))

    def _machine_off(self, ip: str, now: float) -> None:
        name = self.type_names[self.ray.type_of_ip[ip]]
        self.result.machine_seconds[name] = (self.result.machine_seconds.get(name, 0.0)
                                             + now - self.on_since.pop(ip))
        self.on_count[self.ray.type_of_ip[ip]] -= 1
        self.last_gone[ip] = now

    def _sample(self, now: float) -> None:
        result = self.result
        result.times.append(now)
        for index, name in enumerate(self.type_names):
            result.on.setdefault(name, []).append(self.on_count[index])
            result.wanted.setdefault(name, []).append(self.ray.wanted_machines(index))

    def _close(self, end: float) -> None:
        result = self.result
        result.end_s = end
        for ip in list(self.on_since):
            self._machine_off(ip, end)
        for name in self.type_names:
            result.machine_seconds.setdefault(name, 0.0)
        for name, usage in zip(self.type_names, self.ray.usage, strict=True):
            usage.change(end, (), 0.0)
            result.oracle_machine_seconds[name] = usage.machine_seconds
        result.unserved = [(end - arrival, units)
                           for arrival, units in self.ray.waiting_since()]
