"""The explicit context the policies share: the input of one decision, the machines as the
decision leaves them, and what it has decided so far (actions, notes, infeasible demand)."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from onprem_ray_agent import transitions
from onprem_ray_agent.model import (
    Action,
    ActionKind,
    Claim,
    Config,
    Decision,
    DemandSnapshot,
    Event,
    Infeasible,
    Machine,
    MachineState,
    RayNode,
    RayNodeState,
    ip_sort_key,
)

S = MachineState

# Machines that run Ray for us, or are about to: they count against max_workers.
OCCUPYING = frozenset({S.JOINING, S.ACTIVE, S.DRAINING, S.RETIRING})
# Machines that count towards min_workers.
WORKING = frozenset({S.JOINING, S.ACTIVE})


class Phase(IntEnum):
    """Actions are returned in this order, so that applying them one after the other is
    always legal (e.g. forget before re-admitting an IP whose node type changed)."""

    CLAIM = 0  # `up`'s claim, before what is then observed of the machine
    MARK = 1
    FORGET = 2
    ADMIT = 3
    CLAIM_ADMITTED = 4
    MARK_ADMITTED = 5
    RETIRE = 6
    ADD = 7
    CANCEL = 8


def request_id(kind: ActionKind, node_type: str, ips: Iterable[str], now: float) -> str:
    """A deterministic id, safe as an ansible-runner ident and in a file name."""
    ips = tuple(ips)
    digest = hashlib.sha256(f"{kind}|{node_type}|{','.join(ips)}|{now!r}".encode()).hexdigest()
    safe_type = re.sub(r"[^A-Za-z0-9_.-]", "_", node_type)[:40]
    return f"{kind.value}-{safe_type}-{int(now)}-{digest[:8]}"


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def seconds(value: float) -> str:
    return f"{value:.0f} s"


def utc(at: float) -> str:
    """A time of the decision's clock (Unix seconds) as "2026-12-01 13:25:04 UTC"."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def note_list(notes: list[str], items: list[str], why: str, shown: int = 10) -> None:
    """One note for many machines: "10.0.1.1 idle 900 s, ... and 3 more: kept, as ..."."""
    if not items:
        return
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    notes.append(f"{', '.join(items[:shown])}{more}: {why}")


@dataclass
class Context:
    """One decision in the making. Built once from the input; policies read it and record
    actions, notes and infeasible demand through it."""

    config: Config
    snapshot: DemandSnapshot
    now: float
    inventory: dict[str, str] = field(default_factory=dict)  # ip -> node type, not the head
    records: dict[str, Machine] = field(default_factory=dict)  # the store's, not the head
    alive: dict[str, RayNode] = field(default_factory=dict)
    dead: set[str] = field(default_factory=set)  # addresses Ray saw die, none ALIVE there
    # Every tracked machine as it is once this decision's actions are applied.
    current: dict[str, Machine] = field(default_factory=dict)
    # Tracked machines whose IP left the inventory or changed node type.
    leaving: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    infeasible: list[Infeasible] = field(default_factory=list)
    # The add runs still running (None: every joining machine's run); request id -> since
    # when no demand needs its machines, as the last decision found, and as this one finds.
    running_adds: Collection[str] | None = None
    unneeded_before: Mapping[str, float] = field(default_factory=dict)
    unneeded_since: dict[str, float] = field(default_factory=dict)
    # Active machines Ray does not list while the head is ALIVE: IP -> since when, as the
    # last decision found, and as this one finds.
    absent_before: Mapping[str, float] = field(default_factory=dict)
    absent_since: dict[str, float] = field(default_factory=dict)
    # Workers `up` starts Ray on itself (None: no claim, or it expired); held while open.
    claim: Claim | None = None
    # (phase, kind, event, node type, reason) -> IPs, in the order first recorded
    _actions: dict[tuple[Phase, ActionKind, Event, str, str], list[str]] = field(
        default_factory=dict)
    _members: dict[str, list[Machine]] | None = None
    _run_ids: dict[tuple[Phase, ActionKind, Event, str, str], str] = field(default_factory=dict)

    @classmethod
    def build(cls, config: Config, machines: Iterable[Machine], snapshot: DemandSnapshot,
              now: float, running_adds: Collection[str] | None = None,
              unneeded_since: Mapping[str, float] | None = None,
              claim: Claim | None = None,
              absent_since: Mapping[str, float] | None = None) -> Context:
        if claim is not None and now - claim.at > config.provision_timeout_s:
            claim = None  # `up` stopped before the agent read it: too old to hold anything
        ctx = cls(config=config, snapshot=snapshot, now=now, running_adds=running_adds,
                  unneeded_before=dict(unneeded_since or {}), claim=claim,
                  absent_before=dict(absent_since or {}))
        head = config.head_ip
        for node_type in config.node_types:
            for ip in node_type.ips:
                if ip == head:
                    ctx.notes.append(f"{ip} is the head: ignored in node type "
                                     f"{node_type.name}, the head is never managed")
                else:
                    ctx.inventory[ip] = node_type.name
        for machine in machines:
            if machine.ip == head:
                ctx.notes.append(f"{machine.ip} is the head: its record in the state store "
                                 "is ignored, the head is never managed")
            else:
                ctx.records[machine.ip] = machine
        for node in snapshot.nodes:
            if node.state == RayNodeState.ALIVE:
                ctx.alive.setdefault(node.ip, node)
            else:
                ctx.dead.add(node.ip)
        ctx.dead -= set(ctx.alive)
        return ctx

    @property
    def head(self) -> str:
        return self.config.head_ip

    @property
    def head_alive(self) -> bool:
        return self.head in self.alive

    def claimed(self, ip: str) -> bool:
        """Whether `up` claims `ip` (it starts Ray there itself)."""
        return self.claim is not None and ip in self.claim.ips - self.claim.released

    def held_by_up(self, machine: Machine) -> bool:
        """Whether `up`'s open claim holds `machine` (not retired as idle): `up` started Ray
        there and has not ended its claim, so it may still be waiting for it. At most
        provision_timeout_s after the claim (`build` drops an older one)."""
        return self.claim is not None and not self.claim.ended and self.claimed(machine.ip)

    def idle_s(self, machine: Machine) -> float:
        """How long an active machine has been idle: Ray's idle duration counts from Ray's
        start there, so it is capped by the time since the agent first saw it ALIVE (a
        machine that just joined is never idle for long). inf when Ray does not list it."""
        node = self.alive.get(machine.ip)
        if node is None:
            return float("inf")
        return min(node.idle_s, max(0.0, self.now - machine.since))

    def act(self, phase: Phase, kind: ActionKind, event: Event, node_type: str,
            ips: str | Iterable[str], reason: str) -> None:
        """Record an action; actions of one phase, kind, event, type and reason merge."""
        bucket = self._actions.setdefault((phase, kind, event, node_type, reason), [])
        bucket.extend([ips] if isinstance(ips, str) else ips)

    def node_types_of(self, kind: ActionKind) -> set[str]:
        """The node types this decision has actions of `kind` for so far."""
        return {key[3] for key in self._actions if key[1] == kind}

    def ips_of(self, kind: ActionKind) -> set[str]:
        """The machines this decision has actions of `kind` for so far."""
        return {ip for key, ips in self._actions.items() if key[1] == kind for ip in ips}

    def cancel(self, run_id: str, node_type: str, ips: Iterable[str], reason: str) -> None:
        """Record the cancel of the add run `run_id` (its machines change when it ends)."""
        key = (Phase.CANCEL, ActionKind.CANCEL, Event.JOIN_CANCELED, node_type, reason)
        self._actions.setdefault(key, []).extend(ips)
        self._run_ids[key] = run_id

    def mark(self, machine: Machine, event: Event, reason: str,
             phase: Phase = Phase.MARK, request_id: str = "") -> None:
        """Record an observation or a timeout of `machine` (runs nothing); `request_id`: the
        claim that makes it joining (CLAIMED)."""
        self.current[machine.ip] = transitions.apply(
            machine, event, self.now, reason=reason, request_id=request_id,
            backoff=self.config.backoff)
        self.act(phase, ActionKind.MARK, event, machine.node_type, machine.ip, reason)
        if request_id:
            self._run_ids[(phase, ActionKind.MARK, event, machine.node_type, reason)] = \
                request_id

    def members(self, node_type: str) -> list[Machine]:
        """The machines of a node type that stay in the pool, in address order (fixed once
        the inventory is followed: scaling changes no record)."""
        if self._members is None:
            self._members = {}
            for ip in sorted(self.current, key=ip_sort_key):
                if ip not in self.leaving:
                    machine = self.current[ip]
                    self._members.setdefault(machine.node_type, []).append(machine)
        return self._members.get(node_type, [])

    def working(self) -> dict[str, int]:
        """Machines counting towards min_workers, by node type."""
        counts: dict[str, int] = {}
        for machine in self.current.values():
            if machine.state in WORKING and machine.ip not in self.leaving:
                counts[machine.node_type] = counts.get(machine.node_type, 0) + 1
        return counts

    def decision(self) -> Decision:
        actions = []
        for key in sorted(self._actions, key=lambda key: key[0]):  # stable: keeps order
            _, kind, event, node_type, reason = key
            ips = tuple(self._actions[key])
            runs = kind in (ActionKind.ADD, ActionKind.RETIRE)
            run_id = (request_id(kind, node_type, ips, self.now) if runs
                      else self._run_ids.get(key, ""))
            actions.append(Action(kind=kind, event=event, ips=ips, node_type=node_type,
                                  reason=reason, request_id=run_id))
        return Decision(now=self.now, actions=tuple(actions),
                        infeasible=tuple(self.infeasible), notes=tuple(self.notes),
                        unneeded_since=dict(self.unneeded_since),
                        absent_since=dict(self.absent_since))
