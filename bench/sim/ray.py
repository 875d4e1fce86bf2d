"""A simulated Ray: nodes with resources, work placed on them, pending demand as the agent's
adapter reports it (`onprem_ray_agent.model.DemandSnapshot`).

Placement is first-fit in address order over the node types whose machines can hold the shape,
GPU machines last for work that asks for no GPU (Ray's scheduler avoids GPU nodes for such
work). This packs like Ray's default hybrid policy does until a node is half used; beyond that
Ray spreads, which the simulation does not, so its nodes fall idle a little sooner than Ray's.
Work that fits nowhere waits in arrival order; freed capacity is offered to the waiting work
first. A placement group is placed whole or not at all (STRICT_PACK: one node; STRICT_SPREAD:
a node per bundle; PACK, SPREAD: any nodes). A node being drained takes no new work; Ray refuses
to drain a node for idleness while it runs anything.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from onprem_ray_agent.model import (
    BundleDemand,
    DemandSnapshot,
    PlacementGroupDemand,
    PlacementStrategy,
    RayNode,
)
from sim.trace import PLACEMENT_GROUP, Shape, Work

EPS = 1e-9
Needs = tuple[tuple[int, float], ...]  # (resource index, amount > 0)


@dataclass(frozen=True)
class NodeTypeSpec:
    name: str
    resources: Mapping[str, float]
    ips: tuple[str, ...]


class Node:
    __slots__ = (
        "_ray",
        "_ray_free",
        "chunks",
        "draining",
        "free",
        "idle_since",
        "ip",
        "key",
        "total",
        "type",
    )

    def __init__(self, ip: str, type_index: int, key: int, total: list[float], now: float):
        self.ip = ip
        self.type = type_index
        self.key = key  # address order
        self.total = tuple(total)
        self.free = list(total)
        self.chunks = 0  # pieces of work running here
        self.idle_since: float | None = now
        self.draining = False
        self._ray: RayNode | None = None
        self._ray_free: tuple[float, ...] | None = None


@dataclass
class Entry:
    """Waiting work: `remaining` bundles of a task/actor record, or a whole placement group."""

    work: Work
    arrival: float
    needs: Needs = ()
    remaining: int = 0
    bundle_needs: tuple[Needs, ...] = ()
    id: str = ""


@dataclass
class Usage:
    """Per node type: resources in use, and the integral over time of the machines that use
    needs at the least (perfect packing, no provisioning): the oracle's machine-seconds."""

    capacity: tuple[float, ...]
    used: list[float] = field(default_factory=list)
    since: float = 0.0
    machine_seconds: float = 0.0

    def machines(self) -> int:
        need = 0
        for amount, cap in zip(self.used, self.capacity, strict=True):
            if cap > 0 and amount > EPS:
                need = max(need, math.ceil(amount / cap - 1e-6))
        return need

    def change(self, now: float, needs: Needs, sign: float, count: int = 1) -> None:
        self.machine_seconds += (now - self.since) * self.machines()
        self.since = now
        for index, amount in needs:
            self.used[index] += sign * amount * count


class SimRay:
    """Ray's nodes and demand. `on_run(end, node, needs, count)` is told of every piece of
    work placed (to schedule its end); `on_wait(wait_s, units)` of every unit's wait."""

    def __init__(self, head_ip: str, types: Sequence[NodeTypeSpec],
                 on_run: Callable[[float, Node, Needs, int], None],
                 on_wait: Callable[[float, int], None]) -> None:
        self.head_ip = head_ip
        self.types = list(types)
        names = sorted({name for t in types for name in t.resources})
        self.names = names
        self.index = {name: i for i, name in enumerate(names)}
        self.capacity = [tuple(float(t.resources.get(n, 0.0)) for n in names) for t in types]
        self.type_of_ip: dict[str, int] = {}
        self.key_of_ip: dict[str, int] = {}
        for type_index, t in enumerate(types):
            for ip in t.ips:
                self.type_of_ip[ip] = type_index
                self.key_of_ip[ip] = len(self.key_of_ip)
        self.gpu = self.index.get("GPU")
        self.nodes: dict[str, Node] = {}
        self.by_key: dict[int, Node] = {}
        self.open: list[list[int]] = [[] for _ in types]  # schedulable, not full: sorted keys
        self.queue: list[Entry] = []
        self.groups: list[Entry] = []
        self.on_run = on_run
        self.on_wait = on_wait
        self.usage = [Usage(cap, [0.0] * len(names)) for cap in self.capacity]
        self._floor: list[float] = [math.inf] * len(names)  # least any shape needs, per resource
        self._type_order: dict[tuple, list[int]] = {}
        self._needs: dict[Shape, Needs] = {}
        self._pg_seq = 0
        self._head = RayNode(ip=head_ip, total={}, available={})
        self.busy_nodes = 0

    # ------------------------------------------------------------ shapes

    def needs(self, shape: Shape) -> Needs:
        needs = self._needs.get(shape)
        if needs is None:
            for name, _ in shape:
                if name not in self.index:
                    self._new_resource(name)
            needs = self._needs[shape] = tuple((self.index[n], a) for n, a in shape)
            amounts = dict(needs)
            floor = [min(f, amounts.get(i, 0.0)) for i, f in enumerate(self._floor)]
            if floor != self._floor:
                self._floor = floor
                self._reopen()
        return needs

    def _new_resource(self, name: str) -> None:
        """A resource no machine has: work that asks for it waits, infeasible, as in Ray."""
        self.index[name] = len(self.names)
        self.names.append(name)
        self.capacity = [(*cap, 0.0) for cap in self.capacity]
        for usage, cap in zip(self.usage, self.capacity, strict=True):
            usage.capacity = cap
            usage.used.append(0.0)
        self._floor.append(0.0 if self._needs else math.inf)
        for node in self.nodes.values():
            node.total = (*node.total, 0.0)
            node.free.append(0.0)
        self._type_order.clear()

    def _reopen(self) -> None:
        """The least any shape needs went down: nodes counted full may hold work again."""
        for type_index in range(len(self.types)):
            self.open[type_index] = sorted(
                n.key for n in self.nodes.values()
                if n.type == type_index and not n.draining and not self._full(n))

    def types_for(self, needs: Needs) -> list[int]:
        """Types that can ever hold `needs`, in placement order (GPU types last for work
        that asks for no GPU)."""
        key = needs
        order = self._type_order.get(key)
        if order is None:
            fitting = [i for i, cap in enumerate(self.capacity)
                       if all(cap[r] + EPS >= a for r, a in needs)]
            if self.gpu is not None and not any(r == self.gpu for r, _ in needs):
                fitting.sort(key=lambda i: self.capacity[i][self.gpu] > 0)
            order = self._type_order[key] = fitting
        return order

    # ------------------------------------------------------------ nodes

    def add_node(self, ip: str, now: float) -> Node:
        type_index = self.type_of_ip[ip]
        node = Node(ip, type_index, self.key_of_ip[ip], list(self.capacity[type_index]), now)
        self.nodes[ip] = node
        self.by_key[node.key] = node
        bisect.insort(self.open[type_index], node.key)
        self.offer(node, now)
        return node

    def remove_node(self, ip: str) -> None:
        node = self.nodes.pop(ip)
        del self.by_key[node.key]
        self._close(node)

    def drain(self, ip: str) -> bool:
        """Ray's DrainNode for idleness: refused while the node runs anything."""
        node = self.nodes[ip]
        if node.chunks:
            return False
        node.draining = True
        self._close(node)
        return True

    def _close(self, node: Node) -> None:
        keys = self.open[node.type]
        i = bisect.bisect_left(keys, node.key)
        if i < len(keys) and keys[i] == node.key:
            del keys[i]

    def _full(self, node: Node) -> bool:
        free = node.free
        return any(free[i] + EPS < floor for i, floor in enumerate(self._floor)
                   if floor != math.inf)

    # ------------------------------------------------------------ work

    def submit(self, work: Work, now: float) -> bool:
        """New work; True if some of it waits."""
        if work.kind == PLACEMENT_GROUP:
            self._pg_seq += 1
            entry = Entry(work, now, bundle_needs=tuple(self.needs(b) for b in work.bundles),
                          id=f"pg{self._pg_seq:06d}")
            if not self._place_group(entry, now):
                self.groups.append(entry)
                return True
            return False
        entry = Entry(work, now, self.needs(work.shape), work.count)
        for type_index in self.types_for(entry.needs):
            keys = self.open[type_index]
            i = 0
            while i < len(keys) and entry.remaining:
                node = self.by_key[keys[i]]
                self._place(entry, node, now)
                if self._full(node):
                    del keys[i]
                else:
                    i += 1
            if not entry.remaining:
                return False
        self.queue.append(entry)
        return True

    def _fits(self, node: Node, needs: Needs) -> int:
        free = node.free
        count = 1 << 30
        for index, amount in needs:
            count = min(count, int((free[index] + EPS) // amount))
            if not count:
                return 0
        return count

    def _place(self, entry: Entry, node: Node, now: float) -> int:
        count = min(entry.remaining, self._fits(node, entry.needs))
        if count:
            entry.remaining -= count
            self._start(node, entry.needs, count, now)
            self.on_wait(now - entry.arrival, count)
            self.on_run(now + entry.work.duration_s, node, entry.needs, count)
        return count

    def _start(self, node: Node, needs: Needs, count: int, now: float) -> None:
        for index, amount in needs:
            node.free[index] -= amount * count
        if not node.chunks:
            node.idle_since = None
            self.busy_nodes += 1
        node.chunks += 1
        self.usage[node.type].change(now, needs, 1.0, count)

    def finish(self, node: Node, needs: Needs, count: int, now: float) -> bool:
        """Work on `node` ended; True if waiting work was placed on the capacity it freed."""
        for index, amount in needs:
            node.free[index] += amount * count
        node.chunks -= 1
        if not node.chunks:
            node.idle_since = now
            self.busy_nodes -= 1
        self.usage[node.type].change(now, needs, -1.0, count)
        if node.ip not in self.nodes or node.draining:
            return False
        keys = self.open[node.type]
        i = bisect.bisect_left(keys, node.key)
        if (i >= len(keys) or keys[i] != node.key) and not self._full(node):
            keys.insert(i, node.key)
        return self.offer(node, now)

    def offer(self, node: Node, now: float) -> bool:
        """Freed or new capacity on `node`: to the waiting work, in arrival order."""
        placed = False
        if self.queue:
            for entry in self.queue:
                if entry.remaining and node.type in self.types_for(entry.needs) and \
                        self._place(entry, node, now):
                    placed = True
                    if self._full(node):
                        break
            if placed:
                self.queue = [e for e in self.queue if e.remaining]
        if self.groups:
            still = []
            for entry in self.groups:
                if self._place_group(entry, now):
                    placed = True
                else:
                    still.append(entry)
            self.groups = still
        if placed and self._full(node):
            self._close(node)
        return placed

    def _candidates(self, needs: Needs) -> list[Node]:
        return [self.by_key[k] for t in self.types_for(needs) for k in self.open[t]]

    def _place_group(self, entry: Entry, now: float) -> bool:
        strategy = entry.work.strategy
        plan: list[tuple[Node, Needs]] = []
        if strategy == "STRICT_PACK":
            combined: dict[int, float] = {}
            for needs in entry.bundle_needs:
                for index, amount in needs:
                    combined[index] = combined.get(index, 0.0) + amount
            total = tuple(sorted(combined.items()))
            node = next((n for n in self._candidates(total) if self._fits(n, total)), None)
            if node is None:
                return False
            plan = [(node, needs) for needs in entry.bundle_needs]
        else:
            taken: dict[str, list[float]] = {}
            used: set[str] = set()
            for needs in entry.bundle_needs:
                chosen = None
                for node in self._candidates(needs):
                    if strategy == "STRICT_SPREAD" and node.ip in used:
                        continue
                    free = taken.get(node.ip, node.free)
                    if all(free[i] + EPS >= a for i, a in needs):
                        chosen = node
                        break
                if chosen is None:
                    return False
                free = taken.setdefault(chosen.ip, list(chosen.free))
                for index, amount in needs:
                    free[index] -= amount
                used.add(chosen.ip)
                plan.append((chosen, needs))
        for node, needs in plan:
            self._start(node, needs, 1, now)
            self.on_run(now + entry.work.duration_s, node, needs, 1)
            if self._full(node):
                self._close(node)
        self.on_wait(now - entry.arrival, 1)
        return True

    # ------------------------------------------------------------ the agent's view

    def waiting_units(self) -> int:
        return sum(e.remaining for e in self.queue) + len(self.groups)

    def waiting_since(self) -> list[tuple[float, int]]:
        return [(e.arrival, e.remaining) for e in self.queue if e.remaining] + \
            [(e.arrival, 1) for e in self.groups]

    def _resources(self, needs: Needs) -> dict[str, float]:
        return {self.names[i]: a for i, a in needs}

    def _ray_node(self, node: Node, now: float) -> RayNode:
        free = tuple(node.free)
        if node.chunks == 0 or node._ray is None or node._ray_free != free:
            names = self.names
            node._ray = RayNode(
                ip=node.ip,
                total={names[i]: a for i, a in enumerate(node.total) if a > 0},
                available={names[i]: max(0.0, a) for i, a in enumerate(free)
                           if node.total[i] > 0},
                idle_s=0.0 if node.idle_since is None else now - node.idle_since)
            node._ray_free = free
        return node._ray

    def snapshot(self, now: float) -> DemandSnapshot:
        by_shape: dict[Needs, int] = {}
        for entry in self.queue:
            if entry.remaining:
                by_shape[entry.needs] = by_shape.get(entry.needs, 0) + entry.remaining
        pending = tuple(BundleDemand(self._resources(needs), count)
                        for needs, count in by_shape.items())
        groups = tuple(PlacementGroupDemand(
            id=e.id, strategy=PlacementStrategy(e.work.strategy),
            bundles=tuple(self._resources(n) for n in e.bundle_needs)) for e in self.groups)
        nodes = (self._head, *(self._ray_node(n, now) for n in self.nodes.values()))
        return DemandSnapshot(pending=pending, placement_groups=groups, nodes=nodes)

    def wanted_machines(self, type_index: int) -> float:
        """Work in use on a type plus the waiting work that fits it first, in machines."""
        cap = self.capacity[type_index]
        wanted = list(self.usage[type_index].used)
        for entry in self.queue:
            if entry.remaining and self.types_for(entry.needs)[:1] == [type_index]:
                for index, amount in entry.needs:
                    wanted[index] += amount * entry.remaining
        for entry in self.groups:
            for needs in entry.bundle_needs:
                if self.types_for(needs)[:1] == [type_index]:
                    for index, amount in needs:
                        wanted[index] += amount
        return max((w / c for w, c in zip(wanted, cap, strict=True) if c > 0), default=0.0)
