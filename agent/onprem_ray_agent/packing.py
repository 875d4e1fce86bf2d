"""Bin-packing of resource bundles onto simulated nodes.

Speed comes from grouping on both sides: bundles of one shape are placed as a count, and nodes
with the same free resources (counted only over the resources the demand names) form one group,
so placing a shape costs one pass over the groups rather than over every node and bundle.
Groups that cannot hold any shape of the demand (e.g. nodes with no free CPU when every shape
needs CPU) are left out of that pass, as Ray's `_can_fit_any_request` pre-filter does. Within a
group, nodes are used in the order they were added.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import islice

from onprem_ray_agent.model import Resources

# Ray gives every node one unit of its implicit resources (resource_demand_scheduler._fits).
IMPLICIT_RESOURCE_PREFIX = "node:__internal_implicit_resource_"
# Ray's resources are fixed-point with 4 decimals; this absorbs float noise only.
_EPSILON = 1e-6

Shape = tuple[tuple[str, float], ...]  # sorted (name, amount > 0)
Vector = tuple[float, ...]  # amounts over the packer's resource names
Needs = tuple[tuple[int, float], ...]  # (index into Vector, amount > 0)


def shape_of(resources: Resources) -> Shape:
    items = [(name, float(amount)) for name, amount in resources.items() if amount > 0]
    if len(items) > 1:
        items.sort()
    return tuple(items)


def ray_order(shape: Shape) -> tuple:
    """Sort key, most demanding first when reversed: Ray's `_sort_resource_request`
    (autoscaler/v2/scheduler.py) without label and placement constraints."""
    return (len(shape), sum(amount for _, amount in shape), shape)


def fits_count(free: Mapping[str, float], shape: Shape) -> int:
    """How many bundles of `shape` fit in `free` (shape is non-empty)."""
    count = None
    for name, amount in shape:
        default = 1.0 if name.startswith(IMPLICIT_RESOURCE_PREFIX) else 0.0
        here = int((free.get(name, default) + _EPSILON) // amount)
        if count is None or here < count:
            count = here
        if count == 0:
            return 0
    return count or 0


class SimNode:
    """A node in the simulation: alive in Ray, joining, or one the plan would add."""

    ALIVE = "alive"
    JOINING = "joining"
    NEW = "new"

    __slots__ = ("hosts_demand", "idle_s", "ip", "kind", "node_type", "why")

    def __init__(self, kind: str, node_type: str | None, ip: str | None = None,
                 idle_s: float = 0.0) -> None:
        self.kind = kind
        self.node_type = node_type
        self.ip = ip
        self.idle_s = idle_s
        self.hosts_demand = False
        # For new nodes: which demand they are for, label -> number of bundles.
        self.why: dict[tuple[str, str], int] = {}

    def host(self, label: tuple[str, str], count: int) -> None:
        self.hosts_demand = True
        if self.kind == SimNode.NEW:
            self.why[label] = self.why.get(label, 0) + count

    def __repr__(self) -> str:
        return f"SimNode({self.kind}, {self.node_type}, {self.ip})"


class _Group:
    __slots__ = ("listed", "members", "useful", "vector")

    def __init__(self, vector: Vector, useful: bool) -> None:
        self.vector = vector
        self.members: dict[SimNode, None] = {}  # insertion-ordered set
        self.useful = useful  # can hold some shape of the demand
        self.listed = False  # in the packer's scan list


def _per_node(vector: Vector, needs: Needs) -> int:
    count = None
    for index, amount in needs:
        here = int((vector[index] + _EPSILON) // amount)
        if count is None or here < count:
            count = here
        if count == 0:
            return 0
    return count or 0


def _minus(vector: Vector, needs: Needs, times: int) -> Vector:
    values = list(vector)
    for index, amount in needs:
        values[index] = max(0.0, values[index] - amount * times)
    return tuple(values)


class Packer:
    """First-fit placement of bundles onto grouped nodes, over a fixed set of resource names."""

    def __init__(self, names: Iterable[str], shapes: Iterable[Shape] = ()) -> None:
        """`shapes`: every shape that will be placed; groups that fit none are not scanned."""
        self.names = tuple(names)
        self._index = {name: i for i, name in enumerate(self.names)}
        self._defaults = tuple(
            (name, 1.0 if name.startswith(IMPLICIT_RESOURCE_PREFIX) else 0.0)
            for name in self.names)
        # The groups worth scanning, in first-fit order; emptied ones are dropped from time to
        # time and listed again (at the end) when nodes come back to them.
        self._groups: list[_Group] = []
        self._emptied = 0
        self._group_by_vector: dict[Vector, _Group] = {}
        self._group_of: dict[SimNode, _Group] = {}
        # A group is useless when each shape lacks one of its resources there; the smallest
        # amount asked of each resource and the sets of resources asked together say that.
        self._least: list[float] = [math.inf] * len(self.names)
        kinds: set[tuple[int, ...]] = set()
        for shape in shapes:
            needs = self.needs(shape)
            kinds.add(tuple(index for index, _ in needs))
            for index, amount in needs:
                self._least[index] = min(self._least[index], amount)
        self._kinds = tuple(kinds)

    # -- building

    def vector(self, resources: Resources) -> Vector:
        get = resources.get
        return tuple([float(get(name, default)) for name, default in self._defaults])

    def needs(self, shape: Shape) -> Needs:
        return tuple((self._index[name], amount) for name, amount in shape)

    def add(self, node: SimNode, vector: Vector) -> None:
        self._put(node, vector)

    def __len__(self) -> int:
        return len(self._group_of)

    # -- placing counts of one shape

    def _useful(self, vector: Vector) -> bool:
        if not self._kinds:
            return True  # not told what will be placed: keep every group
        least = self._least
        for kind in self._kinds:
            for index in kind:
                if vector[index] + _EPSILON < least[index]:
                    break
            else:
                return True
        return False

    def _candidates(self, needs: Needs) -> list[_Group]:
        """Groups with members that have enough of the shape's largest need, in order: a
        cheap first cut before the exact count."""
        index, amount = max(needs, key=lambda need: need[1] / (self._least[need[0]] or 1))
        amount -= _EPSILON
        if self._emptied * 2 > len(self._groups):
            self._compact()
        return [g for g in self._groups if g.vector[index] >= amount and g.members]

    def _compact(self) -> None:
        kept = []
        for group in self._groups:
            if group.members:
                kept.append(group)
            else:
                group.listed = False
        self._groups = kept
        self._emptied = 0

    def place(self, needs: Needs, count: int, label: tuple[str, str]) -> int:
        """Place up to `count` bundles, first fit over the groups; returns how many did not."""
        for group in self._candidates(needs):
            if count <= 0:
                break
            size = len(group.members)
            if not size:
                continue
            per_node = _per_node(group.vector, needs)
            if per_node == 0:
                continue
            vector = group.vector
            full, rest = divmod(count, per_node)
            if full >= size:
                self._consume(list(group.members), vector, needs, per_node, label)
                count -= per_node * size
                continue
            taken = list(islice(group.members, full + (1 if rest else 0)))
            self._consume(taken[:full], vector, needs, per_node, label)
            self._consume(taken[full:], vector, needs, rest, label)
            count = 0
        return max(count, 0)

    def _consume(self, nodes: Sequence[SimNode], vector: Vector, needs: Needs, times: int,
                 label: tuple[str, str]) -> None:
        if not nodes:
            return
        after = _minus(vector, needs, times)
        for node in nodes:
            self._put(node, after)
            node.host(label, times)

    # -- placing a gang (a placement group): all bundles or none

    def plan_gang(self, bundles: Sequence[Needs], distinct: bool
                  ) -> tuple[dict[SimNode, Vector], list[tuple[SimNode, int]], list[int]]:
        """Where each bundle would go, without changing anything.

        Returns the touched nodes with their free resources afterwards, the assignment
        (node, bundle index) and the indexes of the bundles that found no node. `distinct`
        (STRICT_SPREAD) puts each bundle on a different node; otherwise bundles go first onto
        nodes the gang already uses, which packs it.
        """
        touched: dict[SimNode, Vector] = {}
        assigned: list[tuple[SimNode, int]] = []
        unplaced: list[int] = []
        for position, needs in enumerate(bundles):
            chosen = None
            if not distinct:
                for node, free in touched.items():
                    if _per_node(free, needs):
                        chosen = node
                        break
            if chosen is None:
                chosen = self._first_untouched(needs, touched)
            if chosen is None:
                unplaced.append(position)
                continue
            before = touched.get(chosen)
            if before is None:
                before = self._group_of[chosen].vector
            touched[chosen] = _minus(before, needs, 1)
            assigned.append((chosen, position))
        return touched, assigned, unplaced

    def _first_untouched(self, needs: Needs, touched: Mapping[SimNode, Vector]
                         ) -> SimNode | None:
        index, amount = needs[0]
        amount -= _EPSILON
        for group in tuple(self._groups):
            if (group.vector[index] < amount or not group.members
                    or not _per_node(group.vector, needs)):
                continue
            for node in group.members:
                if node not in touched:
                    return node
        return None

    def commit(self, touched: Mapping[SimNode, Vector], label: tuple[str, str],
               counts: Mapping[SimNode, int]) -> None:
        for node, free in touched.items():
            self._put(node, free)
            node.host(label, counts.get(node, 0))

    def free_of(self, node: SimNode) -> Vector:
        return self._group_of[node].vector

    def set_free(self, node: SimNode, vector: Vector) -> None:
        self._put(node, vector)

    # -- internals

    def _put(self, node: SimNode, vector: Vector) -> None:
        old = self._group_of.get(node)
        if old is not None:
            if old.vector == vector:
                return
            del old.members[node]
            if not old.members and old.listed:
                self._emptied += 1
        group = self._group_by_vector.get(vector)
        if group is None:
            group = _Group(vector, self._useful(vector))
            self._group_by_vector[vector] = group
        if group.useful and not group.listed:
            group.listed = True
            self._groups.append(group)
        group.members[node] = None
        self._group_of[node] = group


def fits_in(total: Resources, shape: Shape) -> bool:
    return bool(shape) and fits_count(total, shape) >= 1


def round_up(amount: float, digits: int = 2) -> float:
    """`amount` rounded up to `digits` significant digits: 1.0001 -> 1.1, 0.0123 -> 0.013."""
    if amount <= 0:
        return amount
    scale = 10.0 ** (digits - 1 - math.floor(math.log10(amount)))
    return math.ceil(amount * scale - 1e-9) / scale


def coarsen(counts: Mapping[Shape, int], digits: int = 2) -> dict[Shape, int]:
    """Shapes with their amounts rounded up, equal ones merged: a plan for at least as much."""
    merged: dict[Shape, int] = {}
    rounded_amounts: dict[float, float] = {}
    for shape, count in counts.items():
        rounded = []
        for name, amount in shape:
            if amount not in rounded_amounts:
                rounded_amounts[amount] = round_up(amount, digits)
            rounded.append((name, rounded_amounts[amount]))
        key = tuple(rounded)
        merged[key] = merged.get(key, 0) + count
    return merged


def merge_counts(items: Iterable[tuple[Resources, int]]) -> dict[Shape, int]:
    """Bundles of equal shape summed, zero-resource bundles dropped (they fit anywhere)."""
    merged: dict[Shape, int] = {}
    for resources, count in items:
        if count <= 0:
            continue
        shape = shape_of(resources)
        if shape:
            merged[shape] = merged.get(shape, 0) + count
    return merged


def utilization_score(node_resources: Resources, shape: Shape, count: int
                      ) -> tuple[bool, int, float, float] | None:
    """Ray's `_resource_based_utilization_scorer` (autoscaler/_private/
    resource_demand_scheduler.py) for `count` bundles of one shape on a fresh node: avoid GPU
    nodes for work without GPUs, then match more resource kinds, then fill the node best."""
    if count <= 0:
        return None
    wanted = {name for name, _ in shape}
    used = dict.fromkeys(wanted, 0.0)
    for name, amount in shape:
        used[name] += amount * count
    utils = []
    matching = 0
    for name, total in node_resources.items():
        if total < 1:
            continue
        if name in wanted:
            matching += 1
        util = min(used.get(name, 0.0), total) / total
        utils.append(total * util**3)
    if not utils:
        return None
    gpu_ok = not (node_resources.get("GPU", 0) > 0 and "GPU" not in wanted)
    return (gpu_ok, matching, min(utils), sum(utils) / len(utils))
