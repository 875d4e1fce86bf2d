"""Placement of resource requests onto nodes, scored as Ray 2.60's autoscaler v2 does.

One `Placer.attempt` is one pass of Ray's `ResourceDemandScheduler._try_schedule`: the
requests, sorted as Ray sorts them, go first onto the nodes there are (alive, joining, or
added earlier in the same decision), then onto new machines of the node types that have room.
Each step fills one candidate node with as much of the remaining requests as it takes (greedy,
in order, no backtracking), scores it with Ray's utilization score, and keeps the best; the
leftover is scored afresh, so five {CPU: 16} with types of 16 and 64 CPUs get one 64 and one
16, and a PACK group of 8 x {GPU: 1} gets the 8-GPU machine.

Speed comes from grouping: nodes with the same type, labels, total and free resources form
one group, scored once for all its members, and a step commits the same fill to as many
members (or new machines of a type) as the remaining counts allow in full. Scores only fall
as requests are used up, so candidates sit in a heap and are scored again only when they reach
its top (a lazy greedy, equal to Ray's choice whenever a fill's score does not rise with fewer
requests). Groups that take nothing are passed over without a fill: a group remembers the
shapes and label rules it refused (its free resources and labels never change), and a scan
over all groups first checks the few requests no other undercuts; a fill through many requests
ends once the node has room for none of those after the last it took. None of it changes a
choice (bench/decide_digest.py compares the decisions of two checkouts).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from onprem_ray_agent.model import Purpose, Resources, Selectors

# Ray gives every node one unit of its implicit resources (resource_demand_scheduler._fits).
IMPLICIT_RESOURCE_PREFIX = "node:__internal_implicit_resource_"
# Ray's resources are fixed-point with 4 decimals; this absorbs float noise only.
_EPSILON = 1e-6
# Ray's AUTOSCALER_CONSERVE_GPU_NODES default: avoid GPU nodes for work without GPUs.
CONSERVE_GPU_NODES = True

Shape = tuple[tuple[str, float], ...]  # sorted (name, amount > 0)
Why = tuple[Purpose, str]  # what a bundle is for, and its text in an add's reason
Score = tuple[int, bool, int, float, float]
# Of the nodes there are, how many (the fullest that take something) are scored before the
# best is chosen (see Placer._score_some).
SCORED_NODES = 2
# From this many requests in a pass, a fill checks after each request it takes whether the
# node has room for any later one (fewer: the checks cost more than they save).
STOPS_FROM = 8
# ... unless the requests are so unlike that a check would try more than this many of them.
STOPS_MOST = 8
_ENTRY = itertools.count()  # ties in a heap never compare groups


def shape_of(resources: Resources) -> Shape:
    items = [(name, float(amount)) for name, amount in resources.items() if amount > 0]
    if len(items) > 1:
        items.sort()
    return tuple(items)


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


def fits_in(total: Resources, shape: Shape) -> bool:
    return bool(shape) and fits_count(total, shape) >= 1


@dataclass(frozen=True)
class Request:
    """One kind of bundle to place: its shape, the labels it selects, what it is for.

    `spread`: a STRICT_SPREAD group's key: at most one such bundle per node, and never on a
    node that carries the key (one holding a bundle of the group already). `tied`: a
    STRICT_PACK group's key: only on a node that carries it (where its bundles are).
    """

    shape: Shape
    why: Why
    selectors: Selectors = ()
    spread: str = ""
    tied: str = ""
    # (name, amount, amount a node has when it does not list the resource), for speed
    needs: tuple[tuple[str, float, float], ...] = field(init=False, compare=False,
                                                        repr=False)
    names: frozenset[str] = field(init=False, compare=False, repr=False)
    ruled: bool = field(init=False, compare=False, repr=False)  # where it goes depends on labels
    # labels' sorted items -> allowed there: keyed without the selectors, whose hash is slow
    _allowed_on: dict[tuple, bool] = field(default_factory=dict, init=False, compare=False,
                                           repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "needs", tuple(
            (name, amount, 1.0 if name.startswith(IMPLICIT_RESOURCE_PREFIX) else 0.0)
            for name, amount in self.shape))
        object.__setattr__(self, "names", frozenset(name for name, _ in self.shape))
        object.__setattr__(self, "ruled", bool(self.selectors or self.spread or self.tied))

    def order(self) -> tuple:
        """Ray's `_sort_resource_request`, most demanding first when reversed: placement
        constraints, label constraints, number of resources, their sum, the shape."""
        first = len(self.selectors[0].constraints) if self.selectors else 0
        return (bool(self.spread or self.tied), first, len(self.shape),
                sum(amount for _, amount in self.shape), self.shape)

    def allowed_on(self, key: tuple) -> bool:
        """`allowed(labels)` of the labels whose sorted items are `key`, remembered."""
        known = self._allowed_on.get(key)
        if known is None:
            known = self._allowed_on[key] = self.allowed(dict(key))
        return known

    def allowed(self, labels: Mapping[str, str]) -> bool:
        if self.spread and self.spread in labels:
            return False
        if self.tied and self.tied not in labels:
            return False
        return not self.selectors or any(s.matches(labels) for s in self.selectors)

    def count_in(self, free: Mapping[str, float]) -> int:
        """How many of it fit in `free`."""
        count = -1
        for name, amount, default in self.needs:
            here = int((free.get(name, default) + _EPSILON) // amount)
            if here <= 0:
                return 0
            if count < 0 or here < count:
                count = here
        return max(count, 0)


class SimNode:
    """A node in the simulation: alive in Ray, joining, or one the plan would add."""

    ALIVE = "alive"
    JOINING = "joining"
    NEW = "new"

    __slots__ = ("hosts_demand", "idle_s", "ip", "kind", "labels", "node_type", "why")

    def __init__(self, kind: str, node_type: str | None, ip: str | None = None,
                 idle_s: float = 0.0, labels: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self.node_type = node_type
        self.ip = ip
        self.idle_s = idle_s
        self.labels = dict(labels or {})
        self.hosts_demand = False
        # For new nodes: which demand they are for -> number of bundles.
        self.why: dict[Why, int] = {}

    def host(self, requests: Sequence[Request], counts: Iterable[tuple[int, int]]) -> None:
        """Take `counts` (request index, bundles) of `requests` (at least one)."""
        self.hosts_demand = True
        if self.kind == SimNode.NEW:
            why = self.why
            for index, count in counts:
                key = requests[index].why
                why[key] = why.get(key, 0) + count

    def __repr__(self) -> str:
        return f"SimNode({self.kind}, {self.node_type}, {self.ip})"


def utilization_score(total: Resources, free: Mapping[str, float], placed: Sequence[Request],
                      labels: Mapping[str, str]) -> Score:
    """Ray v2's `SchedulingNode._compute_score` of a node after `placed` went onto it:
    matching label selectors, then no GPU node for work without GPUs, then more resource
    kinds matched, then the least used resource the most used, then the average; each
    resource's use weighted by its amount (amount x use^3), so bigger nodes filled win."""
    names = frozenset().union(*(request.names for request in placed))
    return _score(total, free, names, [r for r in placed if r.selectors], labels)


def _score(total: Resources, free: Mapping[str, float], wanted: frozenset[str],
           selecting: Sequence[Request], labels: Mapping[str, str]) -> Score:
    """utilization_score, given the resource names of the requests placed and those of
    them that select labels."""
    label_score = 0
    for request in selecting:
        count = len(request.selectors)
        for i, selector in enumerate(request.selectors):
            if selector.matches(labels):
                label_score = count - i
                break
        if label_score:
            break
    matching = len(total.keys() & wanted)
    low = math.inf
    summed = 0.0
    kinds = 0
    for name, amount in total.items():
        if amount == 0 or name not in free:
            continue
        use = (amount - free[name]) / amount
        use = 0.0 if use < 0 else (1.0 if use > 1 else use)
        util = amount * use * use * use
        summed += util
        kinds += 1
        if util < low:
            low = util
    gpu_ok = not (CONSERVE_GPU_NODES and total.get("GPU", 0) > 0 and "GPU" not in wanted)
    if not kinds:
        return (label_score, gpu_ok, matching, 0.0, 0.0)
    return (label_score, gpu_ok, matching, low, summed / kinds)


@dataclass
class Fill:
    """What one node takes of the remaining requests: (request index, count) pairs."""

    counts: list[tuple[int, int]]
    wanted: list[int]  # how many of each placed request were left when the fill was made
    free: dict[str, float]
    labels: Mapping[str, str]
    score: Score


def fill(free: Mapping[str, float], total: Resources, labels: Mapping[str, str],
         requests: Sequence[Request], remaining: Sequence[int],
         labels_key: tuple | None = None,
         stops: Sequence[Sequence[Request]] | None = None) -> Fill | None:
    """Greedy, in order, as Ray's `SchedulingNode.try_schedule`; None if nothing fits.
    `labels_key`: the labels' sorted items, to remember which requests they allow.
    `stops` (see _stops): the fill ends once the node has no room for any request after
    the last it took."""
    counts = []
    wanted = []
    left = None
    after = labels
    names: frozenset[str] = frozenset()  # of the requests placed
    selecting = []  # the requests placed that select labels
    for index, request in enumerate(requests):
        want = remaining[index]
        if not want:
            continue
        if request.ruled:
            if labels_key is not None and after is labels:
                if not request.allowed_on(labels_key):
                    continue
            elif not request.allowed(after):
                continue
        room = free if left is None else left
        here = -1
        for name, amount, default in request.needs:  # Request.count_in, inlined for speed
            have = room.get(name, default) + _EPSILON
            if have < amount:  # what `have // amount < 1` says, without the division
                here = 0
                break
            fits = int(have // amount)
            if here < 0 or fits < here:
                here = fits
        if here <= 0:
            continue
        if left is None:
            left = dict(free)
        if request.spread:
            here = 1
            after = {**after, request.spread: "1"}
        count = min(want, here)
        for name, amount, _ in request.needs:
            rest = left.get(name, 1.0) - amount * count
            left[name] = rest if rest > 0 else 0.0
        counts.append((index, count))
        wanted.append(want)
        names = names | request.names if names else request.names
        if request.selectors:
            selecting.append(request)
        if stops is not None and not _takes_some(left, stops[index + 1]):
            break
    if left is None:
        return None
    return Fill(counts, wanted, left, after, _score(total, left, names, selecting, after))


def _unchanged(result: Fill, remaining: Sequence[int]) -> bool:
    """The same node would take the same fill now: each placed request is still wanted at
    least as much, and one that took all that was left then still has exactly that left."""
    for (index, count), wanted in zip(result.counts, result.wanted, strict=True):
        left = remaining[index]
        if left < count or (count == wanted and left != wanted):
            return False
    return True


def _repeats(result: Fill, remaining: Sequence[int]) -> int:
    """How many nodes in a row take exactly this fill."""
    return min(remaining[index] // count for index, count in result.counts)


def _key(score: Score) -> tuple:
    return (-score[0], -score[1], -score[2], -score[3], -score[4])


class _Group:
    __slots__ = ("free", "key", "labels", "members", "misfits", "node_type", "order", "total")

    def __init__(self, key: tuple, node_type: str | None, total: Resources,
                 free: dict[str, float], labels: dict[str, str], order: int) -> None:
        self.key = key
        self.node_type = node_type
        self.total = total
        self.free = free
        self.labels = labels
        self.members: dict[SimNode, None] = {}  # insertion-ordered set
        self.order = order
        # Ids (Placer._fit_ids) of the shapes its free resources cannot take and of the
        # label rules its labels refuse. Both never change (a node that takes something
        # moves to another group), so later scans skip the group without filling it.
        self.misfits: set[int] = set()


@dataclass
class Template:
    """A new machine of a node type, as the plan may add it."""

    node_type: str
    total: Resources
    labels: Mapping[str, str]
    order: int
    labels_key: tuple = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.labels_key = _items(self.labels)


@dataclass
class Attempt:
    """The outcome of one pass, not applied yet: where each part goes, what is left."""

    requests: list[Request]
    # fills end early (see fill): worth it for many requests only
    stops: list[list[Request]] | None = None
    existing: list[tuple[_Group, int, Fill]] = field(default_factory=list)
    new: list[tuple[Template, int, Fill]] = field(default_factory=list)
    left: list[int] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not any(self.left)

    def leftover(self) -> list[tuple[Request, int]]:
        return [(r, n) for r, n in zip(self.requests, self.left, strict=True) if n]

    def new_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for template, times, _ in self.new:
            counts[template.node_type] = counts.get(template.node_type, 0) + times
        return counts


# room(node type, machines of it already taken in this pass, taken in all): how many more
Room = Callable[[str, int, int], int]
# open(node type, count): new nodes, already known to every placer
Opener = Callable[[str, int], list[SimNode]]


class Placer:
    """The nodes as one source of requests sees them: pending work sees what is free,
    request_resources() sees every node's total as if it were idle (Ray's two
    ResourceRequestSources)."""

    def __init__(self) -> None:
        self._groups: dict[tuple, _Group] = {}
        self._group_of: dict[SimNode, _Group] = {}
        self._created = 0
        # resource -> (free amount, creation order, group), ascending; an emptied group
        # leaves it at once (or, from a list not sorted yet, when pruned)
        self._by_free: dict[str, list[tuple[float, int, _Group]]] = {}
        # resource -> the free amounts of the groups emptied since the last pruning,
        # ascending: they still count in the choice of list to scan (see _where_to_look)
        self._emptied_by_free: dict[str, list[float]] = {}
        self._emptied = 0
        self._by_room: list[_Group] | None = None
        self._unsorted: set[str] = set()  # lists of _by_free to sort before use
        self._totals: dict[tuple, Resources] = {}
        self._fit_ids: dict[tuple, int] = {}

    def add(self, node: SimNode, total: Resources, free: Mapping[str, float]) -> None:
        # One object per distinct total, so that groups can key on its identity.
        total = self._totals.setdefault(_items(total), total)
        self._put(node, total, dict(free), dict(node.labels))

    def _fit_ids_of(self, request: Request) -> tuple[int, int | None]:
        """Numbers for what decides where a request fits, whatever it is for: its shape,
        and its label rule (None: allowed everywhere)."""
        ids = self._fit_ids
        shape = ids.setdefault(request.shape, len(ids))
        if not (request.selectors or request.spread or request.tied):
            return shape, None
        rule = ids.setdefault((request.selectors, request.spread, request.tied), len(ids))
        return shape, rule

    def free_of(self, node: SimNode) -> dict[str, float]:
        return self._group_of[node].free

    def nodes(self) -> list[SimNode]:
        return list(self._group_of)

    def _put(self, node: SimNode, total: Resources, free: dict[str, float],
             labels: dict[str, str]) -> None:
        self._by_room = None
        old = self._group_of.get(node)
        if old is not None:
            del old.members[node]
            if not old.members:
                del self._groups[old.key]
                self._forget(old)
        key = (node.node_type, id(total), _items(free), _items(labels) if labels else ())
        group = self._groups.get(key)
        if group is None:
            self._created += 1
            group = _Group(key, node.node_type, total, free, labels, self._created)
            self._groups[key] = group
            for name, amount in free.items():
                entries = self._by_free.get(name)
                if entries is None:
                    entries = self._by_free[name] = []
                    self._unsorted.add(name)
                if name in self._unsorted:
                    entries.append((amount, self._created, group))
                else:  # (amount, order) are unique: tuples never compare groups
                    bisect.insort(entries, (amount, self._created, group))
        group.members[node] = None
        self._group_of[node] = group

    def _forget(self, group: _Group) -> None:
        """Take an emptied group out of the sorted lists, so that no scan walks it."""
        self._emptied += 1
        for name, amount in group.free.items():
            if name in self._unsorted:
                continue  # scans skip it; pruning drops it
            entries = self._by_free[name]
            index = bisect.bisect_left(entries, (amount, group.order))
            if index < len(entries) and entries[index][2] is group:
                del entries[index]
                bisect.insort(self._emptied_by_free.setdefault(name, []), amount)

    # -- one pass

    def attempt(self, demand: Iterable[tuple[Request, int]], templates: Sequence[Template],
                room: Room) -> Attempt:
        """Where `demand` would go, without changing anything."""
        merged: dict[Request, int] = {}
        for request, count in demand:
            if count > 0 and request.shape:
                merged[request] = merged.get(request, 0) + count
        requests = sorted(merged, key=Request.order, reverse=True)
        remaining = [merged[r] for r in requests]
        attempt = Attempt(requests, _stops(requests) if len(requests) >= STOPS_FROM else None)
        if requests:
            self._onto_existing(attempt, requests, remaining,
                                [self._fit_ids_of(r) for r in requests])
        if any(remaining):
            self._onto_new(attempt, requests, remaining, templates, room)
        attempt.left = remaining
        return attempt

    def _onto_existing(self, attempt: Attempt, requests: list[Request],
                       remaining: list[int], fit_ids: list[tuple[int, int | None]]) -> None:
        # (score key, order, a unique number, group, commits so far when scored, the fill)
        heap: list[tuple[tuple, int, int, _Group, int, Fill]] = []
        seen: set[_Group] = set()
        taken: dict[_Group, int] = {}
        scans: dict[tuple, Iterator[_Group]] = {}
        # requests left -> (where to look, the least of them, them with their fit ids): the
        # groups do not change during a pass, so neither does any of it
        rounds: dict[tuple[int, ...], tuple] = {}
        commits = 0
        wanted = sum(remaining)
        live: tuple[int, ...] = ()
        used_up = True  # some request was used up since `live` was found
        while wanted:
            if not heap:
                # Score (more) nodes, for what is left.
                if used_up:
                    live = tuple(i for i, n in enumerate(remaining) if n)
                    used_up = False
                if live not in rounds:
                    shapes = _distinct_shapes([requests[i] for i in live])
                    where = self._where_to_look(shapes)
                    # A scan by free amount passes only groups with room for one resource
                    # every request needs; a scan by room passes full groups too.
                    least = _least_shapes(shapes) if where[0] == "room" else None
                    pairs = [(requests[i], fit_ids[i]) for i in live]
                    # without label rules, a group refuses them all if it refuses each shape
                    shape_ids = (frozenset(shape for _, (shape, _) in pairs)
                                 if all(rule is None for _, (_, rule) in pairs) else None)
                    rounds[live] = (where, least, pairs, shape_ids)
                where, least, pairs, shape_ids = rounds[live]
                if where not in scans:
                    scans[where] = self._scan(where)
                if not self._score_some(scans[where], heap, requests, remaining, seen,
                                        commits, pairs, least, shape_ids, attempt.stops):
                    return
                continue
            key, order, _, group, scored_at, result = heapq.heappop(heap)
            free_members = len(group.members) - taken.get(group, 0)
            if free_members <= 0:
                continue
            if scored_at != commits and not _unchanged(result, remaining):
                # requests were used up since: score it again
                again = fill(group.free, group.total, group.labels, requests, remaining,
                             group.key[3], attempt.stops)
                if again is None:
                    continue
                fresh = _key(again.score)
                if fresh > key:  # worse than when queued: let better candidates go first
                    heapq.heappush(heap, (fresh, order, next(_ENTRY), group, commits, again))
                    continue
                result, key = again, fresh
            times = min(free_members, _repeats(result, remaining))
            for index, count in result.counts:
                remaining[index] -= count * times
                wanted -= count * times
                if not remaining[index]:
                    used_up = True
            commits += 1
            taken[group] = taken.get(group, 0) + times
            attempt.existing.append((group, times, result))
            if free_members > times:
                heapq.heappush(heap, (key, order, next(_ENTRY), group, commits - 1, result))

    def _where_to_look(self, requests: Sequence[Request]) -> tuple:
        """Which groups may take some request, the fullest first (the ones Ray's score
        favours): when every request needs some of one resource, only the groups with at
        least the least of it, by that resource's free amount: ("free", name, first);
        else every group, by room: ("room",)."""
        # Emptied groups count until pruned, as if they were still in the lists: the choice
        # of list, and so which nodes are scored, stays as it was when scans walked them.
        if self._emptied > len(self._groups):
            for name, entries in self._by_free.items():
                self._by_free[name] = [entry for entry in entries if entry[2].members]
            self._emptied_by_free.clear()
            self._emptied = 0
        common = requests[0].names.intersection(*[r.names for r in requests[1:]])
        best: tuple = ("room",)
        fewest = math.inf
        for name in sorted(common):
            entries = self._by_free.get(name, [])
            if name in self._unsorted:
                entries.sort()
                self._unsorted.discard(name)
            least = min(amount for r in requests for n, amount in r.shape if n == name)
            start = bisect.bisect_left(entries, (least - _EPSILON,))
            emptied = self._emptied_by_free.get(name, ())
            count = (len(entries) - start
                     + len(emptied) - bisect.bisect_left(emptied, least - _EPSILON))
            if count < fewest:
                best, fewest = ("free", name, start), count
        return best

    def _scan(self, where: tuple) -> Iterator[_Group]:
        if where[0] == "free":
            entries = self._by_free.get(where[1], [])
            for index in range(where[2], len(entries)):
                group = entries[index][2]
                if group.members:
                    yield group
            return
        if self._by_room is None:  # sorted once per change of the groups
            self._by_room = sorted(self._groups.values(), key=lambda group: (
                _room(group.total, group.free), group.order))
        for group in self._by_room:
            if group.members:
                yield group

    @staticmethod
    def _score_some(scan: Iterator[_Group], heap: list, requests: list[Request],
                    remaining: list[int], seen: set[_Group], commits: int,
                    live: list[tuple[Request, tuple[int, int | None]]],
                    least: list[Request] | None, shape_ids: frozenset[int] | None,
                    stops: Sequence[Sequence[Request]] | None) -> bool:
        """Score the next SCORED_NODES groups from `scan` that take something into `heap`.
        Ray scores every node; the scan goes from the fullest nodes up, which are the ones
        its utilization score favours, so a looser node is rarely better than all of these
        (and is scored when these are used up). False when the scan is over. `least`:
        requests that fit wherever any of `live` does (see _least_shapes), or None;
        `shape_ids`: the fit ids of `live`'s shapes when none has a label rule, or None."""
        scored = 0
        for group in scan:
            misfits = group.misfits  # (the requests left only shrink: a misfit stays one)
            if misfits and (shape_ids <= misfits if shape_ids is not None else
                            all(shape in misfits or rule in misfits
                                for _, (shape, rule) in live)):
                continue
            if group in seen:
                continue
            seen.add(group)  # what a node cannot take now it cannot take later in the pass
            if least is not None and not _takes_some(group.free, least):
                continue
            result = fill(group.free, group.total, group.labels, requests, remaining,
                          group.key[3], stops)
            if result is None:  # none of the requests left fits it: remember why
                for request, (shape, rule) in live:
                    # refused by its labels (remembered), else by its resources
                    if rule is not None and not request.allowed_on(group.key[3]):
                        misfits.add(rule)
                    else:
                        misfits.add(shape)
                continue
            heapq.heappush(heap, (_key(result.score), group.order, next(_ENTRY), group, commits,
                                  result))
            scored += 1
            if scored >= SCORED_NODES:
                return True
        return scored > 0

    def _onto_new(self, attempt: Attempt, requests: list[Request], remaining: list[int],
                  templates: Sequence[Template], room: Room) -> None:
        taken: dict[str, int] = {}
        while any(remaining):
            best = None
            total_taken = sum(taken.values())
            for template in templates:
                space = room(template.node_type, taken.get(template.node_type, 0),
                             total_taken)
                if space <= 0:
                    continue
                result = fill(template.total, template.total, template.labels, requests,
                              remaining, template.labels_key, attempt.stops)
                if result is None:
                    continue
                key = (_key(result.score), template.order)
                if best is None or key < best[0]:
                    best = (key, template, result, space)
            if best is None:
                return
            _, template, result, space = best
            times = min(space, _repeats(result, remaining))
            for index, count in result.counts:
                remaining[index] -= count * times
            taken[template.node_type] = taken.get(template.node_type, 0) + times
            attempt.new.append((template, times, result))

    # -- applying a pass

    def apply(self, attempt: Attempt, opener: Opener, last: bool = False) -> list[SimNode]:
        """Commit `attempt`: nodes take their fills, new machines are opened. Returns the
        nodes that got something. `last`: no pass follows, so the nodes' free resources
        need not be kept."""
        touched = []
        used: dict[_Group, int] = {}  # with `last`, members stay in their group
        for group, times, result in attempt.existing:
            start = used.get(group, 0)
            members = list(group.members)[start:start + times]
            if last:
                used[group] = start + times
            for node in members:
                self._host(node, group.total, attempt.requests, result, last)
            touched.extend(members)
        for template, times, result in attempt.new:
            nodes = opener(template.node_type, times)
            for node in nodes:
                self._host(node, template.total, attempt.requests, result, last)
            touched.extend(nodes)
        return touched

    def _host(self, node: SimNode, total: Resources, requests: Sequence[Request],
              result: Fill, last: bool) -> None:
        node.host(requests, result.counts)
        node.labels.update(result.labels)
        if not last:
            self._put(node, total, dict(result.free), dict(result.labels))


def _items(mapping: Mapping) -> tuple:
    return tuple(sorted(mapping.items()))


def _room(total: Resources, free: Mapping[str, float]) -> float:
    """How much of a node is free, on average over its resources (0: full, 1: empty)."""
    shares = [free.get(name, 0.0) / amount for name, amount in total.items() if amount > 0]
    return sum(shares) / len(shares) if shares else 0.0


def _takes_some(free: Mapping[str, float], requests: Sequence[Request]) -> bool:
    """Whether `free` has room for one of `requests` (their resources only)."""
    for request in requests:
        for name, amount, default in request.needs:
            if (free.get(name, default) + _EPSILON) // amount < 1:
                break
        else:
            return True
    return False


def _least_shapes(requests: Sequence[Request]) -> list[Request]:
    """The requests no other of `requests` undercuts: a node whose free resources take none
    of these takes none of `requests` (e.g. {CPU: 0.1} and {GPU: 0.5} stand for 24 shapes).
    One undercuts another when it needs only resources the other needs, and no more."""
    if len(requests) == 1:
        return list(requests)
    least: list[Request] = []
    for request in sorted(requests, key=lambda r: (len(r.shape), sum(a for _, a in r.shape))):
        needs = dict(request.shape)
        if not any(all(needs.get(name, -1.0) >= amount for name, amount in lower.shape)
                   for lower in least):
            least.append(request)
    return least


def _stops(requests: Sequence[Request]) -> list[list[Request]] | None:
    """For each position in `requests` (and the end): requests from there on that no other
    from there on undercuts (as in _least_shapes), so a node with room for none of them has
    room for none from there on. None when one such list would exceed STOPS_MOST."""
    stops: list[list[Request]] = [[]]
    for request in reversed(requests):
        least = stops[-1]
        if not any(_undercuts(lower, request) for lower in least):
            least = [request, *(other for other in least if not _undercuts(request, other))]
            if len(least) > STOPS_MOST:
                return None
        stops.append(least)
    stops.reverse()
    return stops


def _undercuts(lower: Request, other: Request) -> bool:
    """`lower` needs only resources `other` needs, and no more of them."""
    needs = dict(other.shape)
    return all(needs.get(name, -1.0) >= amount for name, amount in lower.shape)


def _distinct_shapes(requests: Sequence[Request]) -> list[Request]:
    """One request of each shape: a node that fits none of them is not scored."""
    return list({r.shape: r for r in requests}.values())


def round_up(amount: float, digits: int = 2) -> float:
    """`amount` rounded up to `digits` significant digits: 1.0001 -> 1.1, 0.0123 -> 0.013."""
    if amount <= 0:
        return amount
    scale = 10.0 ** (digits - 1 - math.floor(math.log10(amount)))
    return math.ceil(amount * scale - 1e-9) / scale


def coarsen(shape: Shape, digits: int = 2) -> Shape:
    """The shape with its amounts rounded up: a plan for at least as much."""
    return tuple((name, round_up(amount, digits)) for name, amount in shape)
