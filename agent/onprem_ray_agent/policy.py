"""The decision: (config, machines, Ray's demand, now) -> actions, each with its reason.

Pure: no I/O, no clock, no randomness; the same input always gives the same decision. One call
is one iteration of the loop, in the order of Ray autoscaler v2's `ResourceDemandScheduler.
schedule` (min workers, request_resources(), placement groups, tasks and actors, idle
termination), with launches limited afterwards as Ray's `Reconciler._compute_to_launch` does:

1. observe: machines seen ALIVE join, joins that take too long fail, failed machines whose
   backoff elapsed become spare (or are quarantined), drains past their deadline fail;
2. follow the inventory: new IPs become spare, removed ones are forgotten or retired first;
3. scale up: bin-pack the demand onto free capacity, then onto new machines of the types that
   fit it, within min/max workers; then limit the launches (upscaling_speed, concurrency);
4. scale down: retire above max_workers, then machines idle longer than the timeout that host
   no demand, never below min_workers.

Nothing here ever acts on the head or on an IP outside the pool.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping

from onprem_ray_agent import transitions
from onprem_ray_agent.model import (
    Action,
    ActionKind,
    Config,
    Decision,
    DemandKind,
    DemandSnapshot,
    Event,
    Infeasible,
    Machine,
    MachineState,
    PlacementGroupDemand,
    PlacementStrategy,
    RayNode,
    RayNodeState,
    Resources,
    format_resources,
    ip_sort_key,
    launch_preference,
)
from onprem_ray_agent.packing import (
    Packer,
    Shape,
    SimNode,
    coarsen,
    fits_count,
    fits_in,
    merge_counts,
    ray_order,
    shape_of,
    utilization_score,
)

S = MachineState

# Machines that run Ray for us, or are about to: they count against max_workers.
OCCUPYING = frozenset({S.JOINING, S.ACTIVE, S.DRAINING, S.RETIRING})
# Machines that count towards min_workers.
WORKING = frozenset({S.JOINING, S.ACTIVE})

# Labels of the demand a new machine is for. Launches for these are not held back by
# upscaling_speed: Ray's `_get_concurrent_resource_demand_to_launch` lets min_workers,
# request_resources() and placement groups "immediately scale up to this size".
MIN, GLOBAL_MIN, CONSTRAINT, GANG, PENDING = "min", "global_min", "constraint", "pg", "pending"
URGENT = frozenset({MIN, GLOBAL_MIN, CONSTRAINT, GANG})

# Beyond this many distinct shapes of pending tasks and actors, their amounts are rounded up
# to 2 significant digits so that the plan stays fast; it then covers at least the demand.
MAX_EXACT_SHAPES = 256

# Emission phases; actions are returned in this order so that applying them one after the
# other is always legal (e.g. forget before re-admitting an IP whose node type changed).
_MARK, _FORGET, _ADMIT, _MARK_ADMITTED, _RETIRE, _ADD = range(6)


def decide(config: Config, machines: Iterable[Machine], snapshot: DemandSnapshot,
           now: float) -> Decision:
    """What to do at `now`, given the pool's records and Ray's demand."""
    return _Decider(config, machines, snapshot, now).run()


def request_id(kind: ActionKind, node_type: str, ips: Iterable[str], now: float) -> str:
    """A deterministic id, safe as an ansible-runner ident and in a file name."""
    ips = tuple(ips)
    digest = hashlib.sha256(f"{kind}|{node_type}|{','.join(ips)}|{now!r}".encode()).hexdigest()
    safe_type = re.sub(r"[^A-Za-z0-9_.-]", "_", node_type)[:40]
    return f"{kind.value}-{safe_type}-{int(now)}-{digest[:8]}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _seconds(value: float) -> str:
    return f"{value:.0f} s"


class _Decider:
    def __init__(self, config: Config, machines: Iterable[Machine],
                 snapshot: DemandSnapshot, now: float) -> None:
        self.config = config
        self.snapshot = snapshot
        self.now = now
        self.head = config.head_ip
        self.notes: list[str] = []
        self.infeasible: list[Infeasible] = []
        # (phase, kind, event, node type, reason) -> IPs, in the order first recorded
        self._actions: dict[tuple[int, ActionKind, Event, str, str], list[str]] = {}

        self.inventory: dict[str, str] = {}  # ip -> node type, the head excluded
        for node_type in config.node_types:
            for ip in node_type.ips:
                if ip == self.head:
                    self.notes.append(f"{ip} is the head: ignored in node type "
                                      f"{node_type.name}, the head is never managed")
                else:
                    self.inventory[ip] = node_type.name
        self.records: dict[str, Machine] = {}
        for machine in machines:
            if machine.ip == self.head:
                self.notes.append(f"{machine.ip} is the head: its record in the state store "
                                  "is ignored, the head is never managed")
            else:
                self.records[machine.ip] = machine
        self.alive: dict[str, RayNode] = {}
        self.dead: set[str] = set()  # addresses Ray saw die (and none ALIVE there)
        for node in snapshot.nodes:
            if node.state == RayNodeState.ALIVE:
                self.alive.setdefault(node.ip, node)
            else:
                self.dead.add(node.ip)
        self.dead -= set(self.alive)
        self.head_alive = self.head in self.alive
        # Every tracked machine as it is once this decision's actions are applied.
        self.current: dict[str, Machine] = {}
        # Tracked machines whose IP left the inventory or changed node type.
        self.leaving: set[str] = set()
        self._members: dict[str, list[Machine]] | None = None

    # ------------------------------------------------------------ result

    def run(self) -> Decision:
        self._observe()
        self._follow_inventory()
        if self.head_alive:
            sim_by_ip = _ScaleUp(self).run()
            _ScaleDown(self, sim_by_ip).run()
        else:
            self.notes.append(
                f"the head {self.head} is not ALIVE in Ray: no scaling this iteration "
                "(as Ray's Reconciler waits for the head node)")
        actions = []
        for key in sorted(self._actions, key=lambda key: key[0]):  # stable: keeps order
            _, kind, event, node_type, reason = key
            ips = tuple(self._actions[key])
            runs = kind in (ActionKind.ADD, ActionKind.RETIRE)
            actions.append(Action(
                kind=kind, event=event, ips=ips, node_type=node_type, reason=reason,
                request_id=request_id(kind, node_type, ips, self.now) if runs else ""))
        return Decision(now=self.now, actions=tuple(actions),
                        infeasible=tuple(self.infeasible), notes=tuple(self.notes))

    def act(self, phase: int, kind: ActionKind, event: Event, node_type: str,
            ips: str | Iterable[str], reason: str) -> None:
        """Record an action; actions of one phase, kind, event, type and reason merge."""
        bucket = self._actions.setdefault((phase, kind, event, node_type, reason), [])
        bucket.extend([ips] if isinstance(ips, str) else ips)

    def mark(self, machine: Machine, event: Event, reason: str, phase: int = _MARK) -> None:
        self.current[machine.ip] = transitions.apply(
            machine, event, self.now, reason=reason, backoff=self.config.backoff)
        self.act(phase, ActionKind.MARK, event, machine.node_type, machine.ip, reason)

    # ------------------------------------------------------------ 1. observe

    def _observe(self) -> None:
        for ip in sorted(self.records, key=ip_sort_key):
            machine = self.records[ip]
            self.current[ip] = machine
            self._observe_one(machine)

    def _observe_one(self, machine: Machine) -> None:
        config, now = self.config, self.now
        alive = machine.ip in self.alive
        state = machine.state
        if alive and state == S.JOINING:
            self.mark(machine, Event.JOINED, "seen ALIVE in Ray")
        elif alive and state in (S.SPARE, S.FAILED):
            self.mark(machine, Event.JOINED,
                      f"found ALIVE in Ray while recorded {state.value}: adopted")
        elif state == S.JOINING and now - machine.since > config.provision_timeout_s:
            self.mark(machine, Event.PROVISION_TIMEOUT,
                      f"not ALIVE in Ray {_seconds(now - machine.since)} after the add "
                      f"(provision_timeout_s {config.provision_timeout_s:g})")
        elif state == S.ACTIVE and not alive and self.head_alive:
            # Only a death Ray saw: after a head restart the GCS starts empty and workers
            # register again by themselves within seconds.
            if machine.ip in self.dead:
                self.mark(machine, Event.LOST, "Ray reports its node DEAD")
            else:
                self.notes.append(f"{machine.ip} is active but not in Ray's node list yet: "
                                  "waiting for it to register")
        elif state == S.FAILED:
            limit = config.quarantine_after_failures
            if limit and machine.failures >= limit:
                last = f"; last error: {machine.last_error}" if machine.last_error else ""
                self.mark(machine, Event.QUARANTINE,
                          f"{machine.failures} consecutive failures{last}")
            elif now >= machine.next_attempt_at:
                self.mark(machine, Event.BACKOFF_ELAPSED,
                          f"backoff after {_plural(machine.failures, 'failure')} elapsed")
        elif state == S.DRAINING and now - machine.since > config.drain_deadline_s:
            self.mark(machine, Event.DRAIN_FAILED,
                      f"not drained within drain_deadline_s {config.drain_deadline_s:g}")
        elif state == S.QUARANTINED and alive:
            self.notes.append(f"{machine.ip} is quarantined but ALIVE in Ray: left alone "
                              f"({machine.reason})")

    # ------------------------------------------------------------ 2. inventory

    def _follow_inventory(self) -> None:
        for ip in sorted(self.records, key=ip_sort_key):
            machine = self.current[ip]
            wanted = self.inventory.get(ip)
            if wanted == machine.node_type:
                continue
            why = ("removed from the inventory" if wanted is None
                   else f"node type changed from {machine.node_type} to {wanted}")
            # A new node type must not wipe a backoff or a quarantine: only a spare is
            # re-admitted under its new type; a removed IP is forgotten whatever its past.
            forgettable = (S.SPARE,) if wanted else (S.SPARE, S.FAILED, S.QUARANTINED)
            if machine.state in forgettable:
                del self.current[ip]
                self.act(_FORGET, ActionKind.FORGET, Event.REMOVED_FROM_INVENTORY,
                         machine.node_type, ip, why)
                continue
            self.leaving.add(ip)
            if machine.state == S.ACTIVE and self.head_alive:
                self.current[ip] = transitions.apply(machine, Event.DRAIN_REQUESTED, self.now,
                                                     reason=why)
                self.act(_RETIRE, ActionKind.RETIRE, Event.DRAIN_REQUESTED,
                         machine.node_type, ip, f"{why}: drain and retire {ip}")
            else:
                self.notes.append(f"{ip} {why}; waiting while it is {machine.state.value}")
        for ip in sorted(self.inventory, key=ip_sort_key):
            if ip in self.current:
                continue
            node_type = self.inventory[ip]
            self.current[ip] = transitions.admit(ip, node_type, self.now)
            self.act(_ADMIT, ActionKind.ADMIT, Event.ADMITTED, node_type, ip,
                     "added to the inventory")
            if ip in self.alive:
                self.mark(self.current[ip], Event.JOINED,
                          "already ALIVE in Ray when added to the inventory", _MARK_ADMITTED)

    # ------------------------------------------------------------ shared views

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


class _Launchpad:
    """The machines a plan may add: spare ones of each type, within max_workers."""

    def __init__(self, decider: _Decider) -> None:
        self.d = decider
        config = decider.config
        self.occupied = Counter(m.node_type for m in decider.current.values()
                                if m.state in OCCUPYING)
        self.total_occupied = sum(self.occupied.values())
        self.global_room = (math.inf if config.max_workers is None
                            else config.max_workers - self.total_occupied)
        self.candidates: dict[str, list[Machine]] = {}
        for node_type in config.node_types:
            spare = [m for m in decider.members(node_type.name) if m.state == S.SPARE]
            self.candidates[node_type.name] = sorted(spare, key=launch_preference)
        self.opened: dict[str, list[SimNode]] = {t.name: [] for t in config.node_types}
        self.total_opened = 0
        self.packers: list[Packer] = []
        self.vectors: dict[str, Resources] = {}
        self._state_text: dict[str, str] = {}

    def room(self, name: str, reserved: int = 0, reserved_total: int = 0) -> int:
        node_type = self.d.config.node_type(name)
        if node_type is None:
            return 0
        opened = len(self.opened[name]) + reserved
        # Without an explicit max_workers the type's limit is its list of machines, which
        # the spare candidates already are; machines leaving the list take no slot of it.
        type_room = (math.inf if node_type.max_workers is None
                     else node_type.max_workers - self.occupied[name] - opened)
        room = min(len(self.candidates[name]) - opened, type_room,
                   self.global_room - self.total_opened - reserved_total)
        return max(0, int(room))

    def open(self, name: str, count: int) -> list[SimNode]:
        count = min(count, self.room(name))
        nodes = [SimNode(SimNode.NEW, name) for _ in range(count)]
        resources = self.vectors.get(name) or {}
        for packer in self.packers:
            vector = packer.vector(resources)
            for node in nodes:
                packer.add(node, vector)
        self.opened[name].extend(nodes)
        self.total_opened += count
        return nodes

    def blocked(self, name: str, reserved: int = 0, reserved_total: int = 0) -> str:
        """Why no (further) machine of this type can be added."""
        config = self.d.config
        node_type = config.node_type(name)
        if node_type is None:
            return f"no node type {name}"
        if self.global_room - self.total_opened - reserved_total <= 0:
            return f"max_workers {config.max_workers} reached"
        opened = len(self.opened[name]) + reserved
        if (node_type.max_workers is not None
                and node_type.max_workers - self.occupied[name] - opened <= 0):
            return f"type {name} is at max_workers {node_type.effective_max}"
        return f"no further spare machine of type {name}{self._states(name)}"

    def _states(self, name: str) -> str:
        """' (2 joining, 1 failed, next retry in 25 s)': the type's machines by state."""
        if name not in self._state_text:
            self._state_text[name] = self._describe_states(name)
        return self._state_text[name]

    def _describe_states(self, name: str) -> str:
        states = Counter(m.state for m in self.d.members(name))
        parts = [f"{states[state]} {state.value}" for state in
                 (S.JOINING, S.ACTIVE, S.DRAINING, S.RETIRING, S.FAILED, S.QUARANTINED)
                 if states[state]]
        waiting = [m.next_attempt_at for m in self.d.members(name) if m.state == S.FAILED]
        if waiting:
            parts.append(f"next retry in {_seconds(max(0.0, min(waiting) - self.d.now))}")
        return f" ({', '.join(parts)})" if parts else ""


class _ScaleUp:
    """Bin-pack the demand onto free capacity, then onto new machines; limit the launches."""

    def __init__(self, decider: _Decider) -> None:
        self.d = decider
        self.config = decider.config
        self.pad = _Launchpad(decider)
        self.type_resources = self._type_resources()
        self.pad.vectors = {name: res for name, res in self.type_resources.items() if res}
        snapshot = decider.snapshot
        self.pending = merge_counts((b.resources, b.count) for b in snapshot.pending)
        if len(self.pending) > MAX_EXACT_SHAPES:
            decider.notes.append(
                f"{len(self.pending)} distinct shapes of pending bundles: amounts rounded up "
                f"to 2 significant digits for planning")
            self.pending = coarsen(self.pending)
        self.constraints = merge_counts((b.resources, b.count) for b in snapshot.constraints)
        gang_shapes = {shape_of(bundle) for group in snapshot.placement_groups
                       for bundle in group.bundles} - {()}
        gang_shapes |= {self._combined(group) for group in snapshot.placement_groups
                        if group.strategy == PlacementStrategy.STRICT_PACK} - {()}
        names = sorted({name for shape in (*self.pending, *self.constraints, *gang_shapes)
                        for name, _ in shape})
        self.demand = Packer(names, (*self.pending, *gang_shapes))
        self.floor = Packer(names, self.constraints) if self.constraints else None
        self.sim_by_ip: dict[str, SimNode] = {}
        self.waiting: dict[tuple[str, str], tuple[int, str]] = {}
        self._distinct_cache: dict[Shape, int] = {}

    def _type_resources(self) -> dict[str, Resources | None]:
        """Declared resources, else those of a machine of the type seen ALIVE: as Ray's
        `_update_node_resources_from_runtime` learns types without declared resources."""
        learned: dict[str, Resources] = {}
        for ip in sorted(self.d.alive, key=ip_sort_key):
            machine = self.d.current.get(ip)
            if machine is not None and machine.node_type not in learned:
                learned[machine.node_type] = self.d.alive[ip].total
        # The head is a machine of its type too (Ray's local provider: one type for all), so a
        # pool whose workers are all stopped still knows what a worker offers.
        head_type = self.config.head_node_type
        if head_type and head_type not in learned and self.d.head_alive:
            learned[head_type] = self.d.alive[self.d.head].total
        return {t.name: (dict(t.resources) if t.resources else learned.get(t.name))
                for t in self.config.node_types}

    # ------------------------------------------------------------ plan

    def run(self) -> dict[str, SimNode]:
        """Plan and launch; returns the simulated nodes of the cluster by address."""
        self._add_existing_nodes()
        self.pad.packers = [p for p in (self.floor, self.demand) if p is not None]
        self._min_workers()
        if self.floor is not None:
            self._request_resources(self.floor)
        self.pad.packers = [self.demand]
        self._placement_groups()
        for shape in sorted(self.pending, key=ray_order, reverse=True):
            self._place(self.demand, shape, self.pending[shape], (PENDING, format_resources(
                dict(shape))), DemandKind.BUNDLE)
        self._launch()
        for (kind, text), (count, why) in self.waiting.items():
            self.d.notes.append(f"waiting: {_describe((kind, text), count)}: {why}")
        return self.sim_by_ip

    def _add_existing_nodes(self) -> None:
        d = self.d
        usable = []
        for ip, node in d.alive.items():
            machine = d.current.get(ip)
            if machine is not None and (ip in d.leaving or machine.state in (S.DRAINING,
                                                                             S.RETIRING)):
                continue  # Ray schedules nothing new on a draining node
            usable.append(node)
        usable.sort(key=lambda node: (node.idle_s, ip_sort_key(node.ip)))
        for node in usable:
            machine = d.current.get(node.ip)
            sim = SimNode(SimNode.ALIVE, machine.node_type if machine else None, node.ip,
                          node.idle_s)
            self.sim_by_ip[node.ip] = sim
            self.demand.add(sim, self.demand.vector(node.available))
            if self.floor is not None:
                self.floor.add(sim, self.floor.vector(node.total))
        for node_type in self.config.node_types:
            resources = self.type_resources[node_type.name] or {}
            for machine in d.members(node_type.name):
                if machine.state != S.JOINING:
                    continue
                sim = SimNode(SimNode.JOINING, node_type.name, machine.ip)
                self.sim_by_ip[machine.ip] = sim
                for packer in (self.demand, self.floor):
                    if packer is not None:
                        packer.add(sim, packer.vector(resources))

    def _min_workers(self) -> None:
        working = Counter(m.node_type for m in self.d.current.values()
                          if m.state in WORKING and m.ip not in self.d.leaving)
        for node_type in self.config.node_types:
            need = node_type.effective_min - working[node_type.name]
            if need <= 0:
                continue
            nodes = self.pad.open(node_type.name, need)
            for node in nodes:
                node.why[(MIN, node_type.name)] = 1
            if len(nodes) < need:
                self.d.notes.append(
                    f"type {node_type.name} has {working[node_type.name] + len(nodes)} of "
                    f"min_workers {node_type.effective_min}: "
                    f"{self.pad.blocked(node_type.name)}")
        total = sum(working.values()) + self.pad.total_opened
        need = self.config.min_workers - total
        if need <= 0:
            return
        # No node type is named: prefer types without GPUs, then configuration order.
        order = sorted(self.config.node_types,
                       key=lambda t: (bool((self.type_resources[t.name] or {}).get("GPU")),
                                      self.config.node_types.index(t)))
        for node_type in order:
            for node in self.pad.open(node_type.name, need):
                node.why[(GLOBAL_MIN, "")] = 1
                need -= 1
        if need > 0:
            self.d.notes.append(f"the cluster is {need} short of min_workers "
                                f"{self.config.min_workers}: no machine can be added")

    def _request_resources(self, floor: Packer) -> None:
        # A floor on capacity: packed onto total resources as if the cluster were idle
        # (Ray: _enforce_resource_constraints, v1 _add_min_workers_nodes).
        for shape in sorted(self.constraints, key=ray_order, reverse=True):
            self._place(floor, shape, self.constraints[shape],
                        (CONSTRAINT, format_resources(dict(shape))), DemandKind.CONSTRAINT)

    def _place(self, packer: Packer, shape: Shape, count: int, label: tuple[str, str],
               kind: DemandKind) -> None:
        if not self._feasible(shape, kind, label, count):
            return
        needs = packer.needs(shape)
        left = packer.place(needs, count, label)
        while left:
            choice = self._best_type(shape, left)
            if choice is None:
                break
            name, per_node = choice
            self.pad.open(name, min(-(-left // per_node), self.pad.room(name)))
            left = packer.place(needs, left, label)
        if left:
            self.waiting[label] = (left, self._why_waiting(shape))

    # ------------------------------------------------------------ placement groups

    def _placement_groups(self) -> None:
        def gang_order(group: PlacementGroupDemand) -> tuple:
            # Ray's _sort_gang_resource_requests: most placement constraints, then most
            # bundles, first.
            spread = group.strategy == PlacementStrategy.STRICT_SPREAD
            return (-(len(group.bundles) if spread else 0), -len(group.bundles), group.id)

        for group in sorted(self.d.snapshot.placement_groups, key=gang_order):
            self._place_gang(group)

    def _place_gang(self, group: PlacementGroupDemand) -> None:
        shapes = [shape_of(bundle) for bundle in group.bundles]
        shapes = [shape for shape in shapes if shape]
        if not shapes:
            return
        strategy = group.strategy
        if strategy == PlacementStrategy.STRICT_PACK:
            shapes = [self._combined(group)]
        shapes.sort(key=ray_order, reverse=True)
        distinct = strategy == PlacementStrategy.STRICT_SPREAD
        label = (GANG, f"{group.id} ({strategy.value})")
        text = (f"{group.id} {strategy.value} "
                f"[{', '.join(format_resources(dict(shape)) for shape in shapes)}]")
        for shape in shapes:
            if not self._possible(shape):
                if not self._unknown_types():
                    self._infeasible(DemandKind.PLACEMENT_GROUP, text, 1,
                                     f"bundle {format_resources(dict(shape))} "
                                     f"{self._fits_nothing()}")
                else:
                    self.waiting[label] = (len(shapes), self._why_waiting(shape))
                return
        if distinct:
            most = self._most_distinct_nodes(min(shapes, key=ray_order))
            if len(shapes) > most:
                self._infeasible(DemandKind.PLACEMENT_GROUP, text, 1,
                                 f"STRICT_SPREAD needs {len(shapes)} distinct nodes; "
                                 f"at most {most} can exist")
                return
        packer = self.demand
        needs = [packer.needs(shape) for shape in shapes]
        touched, assigned, unplaced = packer.plan_gang(needs, distinct)
        new_nodes: list[tuple[str, list[float], list[int]]] = []  # type, free, bundles
        reserved: Counter[str] = Counter()
        for position in unplaced:
            shape = shapes[position]
            target = None
            if not distinct:
                for entry in new_nodes:
                    if fits_count(dict(zip(packer.names, entry[1], strict=True)), shape):
                        target = entry
                        break
            if target is None:
                choice = self._best_type(shape, 1, reserved)
                if choice is None:
                    self.waiting[label] = (len(shapes), self._why_waiting(shape, reserved))
                    return
                name = choice[0]
                reserved[name] += 1
                target = (name, list(packer.vector(self.pad.vectors[name])), [])
                new_nodes.append(target)
            for index, amount in needs[position]:
                target[1][index] = max(0.0, target[1][index] - amount)
            target[2].append(position)
        counts = Counter(node for node, _ in assigned)
        packer.commit(touched, label, counts)
        for name, free, positions in new_nodes:
            (node,) = self.pad.open(name, 1)
            packer.set_free(node, tuple(free))
            node.host(label, len(positions))

    @staticmethod
    def _combined(group: PlacementGroupDemand) -> Shape:
        """STRICT_PACK: one node for all, so Ray combines the bundles into one request."""
        combined: dict[str, float] = {}
        for bundle in group.bundles:
            for name, amount in bundle.items():
                if amount > 0:
                    combined[name] = combined.get(name, 0.0) + amount
        return shape_of(combined)

    def _most_distinct_nodes(self, shape: Shape) -> int:
        """How many different nodes could ever hold `shape`: the alive nodes outside the
        pool that can, plus every machine the configuration allows of the types that can."""
        if shape not in self._distinct_cache:
            self._distinct_cache[shape] = self._count_distinct_nodes(shape)
        return self._distinct_cache[shape]

    def _count_distinct_nodes(self, shape: Shape) -> int:
        outside = sum(1 for ip, node in self.d.alive.items()
                      if ip not in self.d.current and fits_in(node.total, shape))
        pool = 0
        for node_type in self.config.node_types:
            resources = self.type_resources[node_type.name]
            if resources and fits_in(resources, shape):
                pool += min(node_type.effective_max, len(self.d.members(node_type.name)))
        if self.config.max_workers is not None:
            pool = min(pool, self.config.max_workers)
        return outside + pool

    # ------------------------------------------------------------ types and feasibility

    def _best_type(self, shape: Shape, count: int, reserved: Mapping[str, int] | None = None
                   ) -> tuple[str, int] | None:
        """The node type a new machine for `shape` should be, by Ray's utilization score;
        ties go to the type listed first."""
        reserved = reserved or {}
        reserved_total = sum(reserved.values())
        best = None
        for index, node_type in enumerate(self.config.node_types):
            resources = self.pad.vectors.get(node_type.name)
            if not resources:
                continue
            per_node = fits_count(resources, shape)
            if not per_node or not self.pad.room(node_type.name,
                                                 reserved.get(node_type.name, 0),
                                                 reserved_total):
                continue
            score = utilization_score(resources, shape, min(per_node, count))
            if score is None:
                continue
            key = (score, -index)
            if best is None or key > best[0]:
                best = (key, node_type.name, per_node)
        return None if best is None else (best[1], best[2])

    def _possible(self, shape: Shape) -> bool:
        """Some machine could ever hold one bundle: a type that allows workers (Ray's
        `is_feasible`), or a node already in the cluster (e.g. the head)."""
        for node_type in self.config.node_types:
            resources = self.type_resources[node_type.name]
            if resources and node_type.effective_max > 0 and fits_in(resources, shape):
                return True
        return any(fits_in(node.total, shape) for ip, node in self.d.alive.items()
                   if ip not in self.d.leaving)

    def _unknown_types(self) -> list[str]:
        return [t.name for t in self.config.node_types
                if not self.type_resources[t.name] and t.effective_max > 0]

    def _fits_nothing(self) -> str:
        offers = ", ".join(f"{t.name} {format_resources(self.type_resources[t.name] or {})}"
                           for t in self.config.node_types)
        return f"fits no node type ({offers or 'none'}) and no node in the cluster"

    def _feasible(self, shape: Shape, kind: DemandKind, label: tuple[str, str],
                  count: int) -> bool:
        if self._possible(shape):
            return True
        if self._unknown_types():
            self.waiting[label] = (count, self._why_waiting(shape))
        else:
            self._infeasible(kind, label[1], count, self._fits_nothing())
        return False

    def _infeasible(self, kind: DemandKind, demand: str, count: int, reason: str) -> None:
        self.d.infeasible.append(Infeasible(kind=kind, demand=demand, count=count,
                                            reason=reason))

    def _why_waiting(self, shape: Shape, reserved: Mapping[str, int] | None = None) -> str:
        reserved = reserved or {}
        reserved_total = sum(reserved.values())
        reasons = []
        for node_type in self.config.node_types:
            resources = self.type_resources[node_type.name]
            if not resources:
                if node_type.effective_max > 0:
                    reasons.append(f"type {node_type.name} declares no resources and none "
                                   "of its machines is ALIVE yet")
                continue
            mine = reserved.get(node_type.name, 0)
            if fits_in(resources, shape) and not self.pad.room(node_type.name, mine,
                                                               reserved_total):
                reasons.append(self.pad.blocked(node_type.name, mine, reserved_total))
        return "; ".join(dict.fromkeys(reasons)) or "only nodes busy with other work fit it"

    # ------------------------------------------------------------ launches

    def _launch(self) -> None:
        """Cut the plan to what may start now. Per type, pending launches are at most
        max(1, ceil(upscaling_speed x max(running, 1))), running counting the head when it
        is of the type (Ray v2 `Reconciler._compute_to_launch`), less the machines already
        joining (v1 `_get_concurrent_resource_demand_to_launch`), but never fewer than the
        machines for min_workers, request_resources() and placement groups; then at most
        max_concurrent_launches joining in all."""
        d, config = self.d, self.config
        joining = Counter(m.node_type for m in d.current.values() if m.state == S.JOINING)
        budget = max(0, config.max_concurrent_launches - sum(joining.values()))
        for node_type in config.node_types:
            name = node_type.name
            planned = self.pad.opened[name]
            if not planned:
                continue
            running = sum(1 for m in d.members(name) if m.state == S.ACTIVE and m.ip in d.alive)
            if config.head_node_type == name:
                running += 1
            cap = max(1, math.ceil(config.upscaling_speed * max(running, 1)))
            urgent = sum(1 for node in planned if any(k in URGENT for k, _ in node.why))
            allowed = max(cap - joining[name], urgent)
            count = min(len(planned), allowed, budget)
            budget -= count
            if count < min(len(planned), allowed):
                d.notes.append(
                    f"holding {len(planned) - count} of {len(planned)} planned adds of type "
                    f"{name}: max_concurrent_launches {config.max_concurrent_launches} "
                    f"reached ({sum(joining.values())} joining)")
            elif count < len(planned):
                d.notes.append(
                    f"holding {len(planned) - count} of {len(planned)} planned adds of type "
                    f"{name}: upscaling_speed {config.upscaling_speed:g} with {running} "
                    f"running allows {cap} pending, {joining[name]} already joining")
            if count <= 0:
                continue
            ips = [machine.ip for machine in self.pad.candidates[name][:count]]
            for node, ip in zip(planned, ips, strict=False):
                node.ip = ip
            reason = _add_reason(name, planned[:count], node_type.effective_min,
                                 self.config.min_workers, ips)
            d.act(_ADD, ActionKind.ADD, Event.ADD_REQUESTED, name, ips, reason)


class _ScaleDown:
    """Retire above max_workers, then machines idle past the timeout that host no demand."""

    def __init__(self, decider: _Decider, sim_by_ip: Mapping[str, SimNode]) -> None:
        self.d = decider
        self.config = decider.config
        self.sim_by_ip = sim_by_ip
        self.retired: set[str] = set()
        self.working = Counter(m.node_type for m in decider.current.values()
                               if m.state in WORKING and m.ip not in decider.leaving)

    def run(self) -> None:
        self._max_workers()
        self._idle()

    def _active(self) -> list[Machine]:
        return [m for ip, m in self.d.current.items()
                if m.state == S.ACTIVE and ip not in self.d.leaving and ip not in self.retired]

    def _termination_order(self, machine: Machine) -> tuple:
        # Ray v2 _sort_nodes_for_termination: longest idle first, then least used.
        node = self.d.alive.get(machine.ip)
        idle = node.idle_s if node else math.inf
        return (-idle, _utilization(node), ip_sort_key(machine.ip))

    def _retire(self, machines: list[Machine], event: Event, reason: str,
                node_type: str) -> None:
        if not machines:
            return
        ips = [m.ip for m in machines]
        self.retired.update(ips)
        self.d.act(_RETIRE, ActionKind.RETIRE, event, node_type, ips,
                   f"{reason}: retire {', '.join(ips)}")

    def _max_workers(self) -> None:
        # Ray v2 _enforce_max_workers_per_type / _enforce_max_workers_global: above the
        # limit, nodes are retired in termination order, busy or not.
        for node_type in self.config.node_types:
            over = self.working[node_type.name] - node_type.effective_max
            if over <= 0:
                continue
            active = sorted((m for m in self._active() if m.node_type == node_type.name),
                            key=self._termination_order)
            chosen = active[:over]
            self._retire(chosen, Event.DRAIN_REQUESTED,
                         f"type {node_type.name} has {self.working[node_type.name]} workers, "
                         f"max_workers {node_type.effective_max}", node_type.name)
            self.working[node_type.name] -= len(chosen)
        if self.config.max_workers is None:
            return
        over = sum(self.working.values()) - self.config.max_workers
        if over <= 0:
            return
        total = sum(self.working.values())
        chosen = sorted(self._active(), key=self._termination_order)[:over]
        for name in dict.fromkeys(m.node_type for m in chosen):
            of_type = [m for m in chosen if m.node_type == name]
            self._retire(of_type, Event.DRAIN_REQUESTED,
                         f"{total} workers, max_workers {self.config.max_workers}", name)
            self.working[name] -= len(of_type)

    def _idle(self) -> None:
        # Ray v2 _enforce_idle_termination: idle strictly longer than the timeout, not needed
        # by pending demand or request_resources(), never below min_workers; the longest
        # idle go first.
        timeout = self.config.idle_timeout_s
        idle: list[Machine] = []
        kept_for_demand: list[str] = []
        kept_for_min: dict[str, list[str]] = {}
        for machine in self._active():
            node = self.d.alive.get(machine.ip)
            if node is None or node.idle_s <= timeout:
                continue
            sim = self.sim_by_ip.get(machine.ip)
            if sim is not None and sim.hosts_demand:
                kept_for_demand.append(f"{machine.ip} idle {_seconds(node.idle_s)}")
                continue
            idle.append(machine)
        _note_list(self.d.notes, kept_for_demand, "kept, as pending demand fits there")
        idle.sort(key=self._termination_order)
        chosen: dict[str, list[Machine]] = {}
        for machine in idle:
            node_type = self.config.node_type(machine.node_type)
            floor = node_type.effective_min if node_type else 0
            seen = f"{machine.ip} idle {_seconds(self.d.alive[machine.ip].idle_s)}"
            if self.working[machine.node_type] <= floor:
                why = f"kept, as type {machine.node_type} is at min_workers {floor}"
                kept_for_min.setdefault(why, []).append(seen)
                continue
            if sum(self.working.values()) <= self.config.min_workers:
                why = f"kept, as the cluster is at min_workers {self.config.min_workers}"
                kept_for_min.setdefault(why, []).append(seen)
                continue
            self.working[machine.node_type] -= 1
            chosen.setdefault(machine.node_type, []).append(machine)
        for why, seen in kept_for_min.items():
            _note_list(self.d.notes, seen, why)
        for name, machines in chosen.items():
            detail = ", ".join(f"{m.ip} {_seconds(self.d.alive[m.ip].idle_s)}" for m in machines)
            self._retire(machines, Event.IDLE_EXPIRED,
                         f"idle longer than idle_timeout_minutes "
                         f"{self.config.idle_timeout_minutes:g} ({detail})", name)


def _note_list(notes: list[str], items: list[str], why: str, shown: int = 10) -> None:
    """One note for many machines: "10.0.1.1 idle 900 s, ... and 3 more: kept, as ..."."""
    if not items:
        return
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    notes.append(f"{', '.join(items[:shown])}{more}: {why}")


def _utilization(node: RayNode | None) -> float:
    if node is None:
        return 0.0
    shares = [(total - node.available.get(name, 0.0)) / total
              for name, total in node.total.items() if total > 0]
    return sum(shares) / len(shares) if shares else 0.0


def _describe(label: tuple[str, str], count: int) -> str:
    kind, text = label
    if kind == PENDING:
        return f"{count} pending {text} {'bundle' if count == 1 else 'bundles'}"
    if kind == CONSTRAINT:
        return f"{count} request_resources {text} {'bundle' if count == 1 else 'bundles'}"
    if kind == GANG:
        return f"{_plural(count, 'bundle')} of placement group {text}"
    return text


def _add_reason(name: str, nodes: list[SimNode], type_min: int, global_min: int,
                ips: list[str]) -> str:
    totals: dict[tuple[str, str], int] = {}
    for node in nodes:
        for label, count in node.why.items():
            totals[label] = totals.get(label, 0) + count
    parts = []
    mins = totals.pop((MIN, name), 0)
    if mins:
        parts.append(f"type {name} is below min_workers {type_min}")
    if totals.pop((GLOBAL_MIN, ""), 0):
        parts.append(f"the cluster is below min_workers {global_min}")
    demand = [_describe(label, count) for label, count in totals.items()]
    if demand:
        verb = "fits" if sum(totals.values()) == 1 else "fit"
        parts.append(f"{', '.join(demand)} {verb} on type {name}")
    return f"{'; '.join(parts)}: add {', '.join(ips)}"
