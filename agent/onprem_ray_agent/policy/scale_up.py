"""Policy 3, scale up: place the demand on the cluster as Ray's autoscaler v2 would, adding
machines of the types that score best for it, then limit the launches.

In the order of Ray's `ResourceDemandScheduler.schedule`: min_workers, request_resources()
(onto every node's total, as if idle), placement groups (each whole or not at all), then
tasks and actors. Each is one pass of the `Placer`, which scores whole sets of bundles on
each candidate node and scores the leftover again. Launches are then limited as Ray's
`Reconciler._compute_to_launch` does (upscaling_speed, max_concurrent_launches).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterable

from ansible_collections.onprem.ray.plugins.plugin_utils.min_workers import (
    NodeTypeSlots,
    choose_min_workers,
)

from onprem_ray_agent.model import (
    ActionKind,
    DemandKind,
    Event,
    Infeasible,
    MachineState,
    PlacementGroupDemand,
    PlacementStrategy,
    Purpose,
    RayNode,
    Resources,
    Selectors,
    format_resources,
    format_selectors,
    ip_sort_key,
    selectors_match,
)
from onprem_ray_agent.packing import (
    Attempt,
    Placer,
    Request,
    Shape,
    SimNode,
    Why,
    coarsen,
    fits_in,
    shape_of,
)
from onprem_ray_agent.policy.context import Context, Phase, plural
from onprem_ray_agent.policy.launchpad import Launchpad

S = MachineState
PG = PlacementStrategy

# Beyond this many distinct shapes of pending tasks and actors, their amounts are rounded up
# to 2 significant digits so that the plan stays fast; it then covers at least the demand.
MAX_EXACT_SHAPES = 256
# The label a simulated node carries while it holds bundles of a placement group (Ray marks
# such nodes with a `_PG_<id>` label); a label key of Ray's syntax never contains ':'.
_GROUP_LABEL = "placement-group:"


def scale_up(ctx: Context) -> dict[str, SimNode]:
    """Plan and launch; returns the simulated nodes of the cluster by address."""
    return _ScaleUp(ctx).run()


def machines_needed(ctx: Context) -> dict[str, int]:
    """How many machines of each type scale-up would add for this demand, before the launch
    limits (upscaling_speed, max_concurrent_launches), within min and max workers. Records
    nothing in `ctx` but its notes and infeasible demand."""
    up = _ScaleUp(ctx)
    up.place()
    return {name: len(nodes) for name, nodes in up.pad.opened.items()}


class _ScaleUp:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.pad = Launchpad(ctx)
        self.demand = Placer()
        self.floor = Placer() if ctx.snapshot.constraints else None
        self.sim_by_ip: dict[str, SimNode] = {}
        self.waiting: dict[Why, tuple[int, str]] = {}
        self._possible_cache: dict[tuple, bool] = {}
        self._distinct_cache: dict[tuple, int] = {}
        self._alive_kinds: list[tuple[Resources, dict[str, str]]] | None = None
        self._outside: list[tuple[str, RayNode]] | None = None

    def run(self) -> dict[str, SimNode]:
        self.place()
        self._launch()
        for why, (count, text) in self.waiting.items():
            self.ctx.notes.append(f"waiting: {_describe(why, count)}: {text}")
        return self.sim_by_ip

    def place(self) -> None:
        """The machines the demand needs (in `pad.opened`), before the launch limits."""
        self._add_existing_nodes()
        self.pad.placers = [p for p in (self.floor, self.demand) if p is not None]
        self._min_workers()
        if self.floor is not None:
            self._request_resources(self.floor)
        self.pad.placers = [self.demand]
        self._placement_groups()
        self._pending()

    # ------------------------------------------------------------ the cluster there is

    def _add_existing_nodes(self) -> None:
        ctx = self.ctx
        groups_on: dict[str, dict[str, str]] = {}  # ip -> labels of the groups placed there
        for group in ctx.snapshot.placement_groups:
            for ip in group.placed_on:
                groups_on.setdefault(ip, {})[_GROUP_LABEL + group.id] = "1"
        usable = []
        for ip, node in ctx.alive.items():
            machine = ctx.current.get(ip)
            if machine is not None and (ip in ctx.leaving or machine.state in (S.DRAINING,
                                                                               S.RETIRING)):
                continue  # Ray schedules nothing new on a draining node
            usable.append(node)
        usable.sort(key=lambda node: (node.idle_s, ip_sort_key(node.ip)))
        for node in usable:
            machine = ctx.current.get(node.ip)
            node_type = self.config.node_type(machine.node_type) if machine else None
            labels = {**(node_type.labels if node_type else {}), **node.labels,
                      **groups_on.get(node.ip, {})}
            sim = SimNode(SimNode.ALIVE, machine.node_type if machine else None, node.ip,
                          node.idle_s, labels)
            self.sim_by_ip[node.ip] = sim
            self.demand.add(sim, node.total, node.available)
            if self.floor is not None:
                self.floor.add(sim, node.total, node.total)
        for node_type in self.config.node_types:
            resources = self.pad.resources[node_type.name] or {}
            for machine in ctx.members(node_type.name):
                if machine.state != S.JOINING:
                    continue
                sim = SimNode(SimNode.JOINING, node_type.name, machine.ip,
                              labels=node_type.labels)
                self.sim_by_ip[machine.ip] = sim
                for placer in (self.demand, self.floor):
                    if placer is not None:
                        placer.add(sim, resources, resources)

    # ------------------------------------------------------------ min_workers

    def _min_workers(self) -> None:
        """Machines for each node type's min_workers, then the cluster's: chosen by the
        collection's choose_min_workers, the function `up` uses too."""
        working = self.ctx.working()
        pad = self.pad
        slots = [NodeTypeSlots(
            t.name, t.effective_min,
            # No max_workers: the type's room is its spare machines, as the launchpad has it.
            t.max_workers if t.max_workers is not None
            else pad.occupied[t.name] + len(pad.candidates[t.name]),
            tuple(m.ip for m in pad.candidates[t.name]),
            gpu=bool((pad.resources[t.name] or {}).get("GPU")),
            working=working.get(t.name, 0), occupied=pad.occupied[t.name])
            for t in self.config.node_types]
        choice = choose_min_workers(slots, self.config.min_workers, self.config.max_workers)
        for_types = Counter(name for name, _machine in choice.for_node_types)
        for node_type in self.config.node_types:
            need = node_type.effective_min - working.get(node_type.name, 0)
            if need <= 0:
                continue
            nodes = pad.open(node_type.name, for_types[node_type.name])
            for node in nodes:
                node.why[(Purpose.MIN_WORKERS, node_type.name)] = 1
            if len(nodes) < need:
                self.ctx.notes.append(
                    f"type {node_type.name} has {working.get(node_type.name, 0) + len(nodes)} "
                    f"of min_workers {node_type.effective_min}: "
                    f"{pad.blocked(node_type.name)}")
        # No node type is named: types without GPUs first, then configuration order.
        for name, count in Counter(name for name, _machine in choice.for_cluster).items():
            for node in pad.open(name, count):
                node.why[(Purpose.GLOBAL_MIN, "")] = 1
        if choice.cluster_shortfall > 0:
            self.ctx.notes.append(f"the cluster is {choice.cluster_shortfall} short of "
                                  f"min_workers {self.config.min_workers}: no machine can be "
                                  f"added")

    # ------------------------------------------------------------ request_resources, tasks

    def _request_resources(self, floor: Placer) -> None:
        # A floor on capacity: placed onto total resources as if the cluster were idle, and
        # all or nothing: a request that cannot be met whole adds no machine at all (Ray:
        # _enforce_resource_constraints returns it infeasible and launches nothing for it).
        constraints = self.ctx.snapshot.constraints
        requests = self._requests(constraints, Purpose.CONSTRAINT, DemandKind.CONSTRAINT)
        asked = sum(b.count for b in constraints if shape_of(b.resources) and b.count > 0)
        if not asked:
            return
        attempt = floor.attempt(requests, self.pad.templates, self.pad.room)
        short = attempt.leftover()
        if sum(count for _, count in requests) == asked and not short:
            floor.apply(attempt, self.pad.open)
            return
        for request, left in short:
            self.waiting[request.why] = (left, self._why_waiting(request, attempt))
        self.ctx.notes.append(
            f"request_resources() of {plural(asked, 'bundle')} cannot be met whole: no "
            "machine is added for it (as Ray does)")

    def _pending(self) -> None:
        requests = self._requests(self.ctx.snapshot.pending, Purpose.PENDING,
                                  DemandKind.BUNDLE)
        self.pad.placers = []  # the last pass: no placer looks at the machines it adds
        self._pass(self.demand, requests, last=True)

    def _requests(self, demand: Iterable, purpose: Purpose, kind: DemandKind
                  ) -> list[tuple[Request, int]]:
        counts: dict[tuple[Shape, Selectors], int] = {}
        for bundle in demand:
            shape = shape_of(bundle.resources)
            if shape and bundle.count > 0:
                key = (shape, bundle.label_selectors)
                counts[key] = counts.get(key, 0) + bundle.count
        if purpose == Purpose.PENDING and len(counts) > MAX_EXACT_SHAPES:
            self.ctx.notes.append(
                f"{len(counts)} distinct shapes of pending bundles: amounts rounded up to 2 "
                "significant digits for planning")
            coarse: dict[tuple[Shape, Selectors], int] = {}
            for (shape, selectors), count in counts.items():
                key = (coarsen(shape), selectors)
                coarse[key] = coarse.get(key, 0) + count
            counts = coarse
        requests = []
        for (shape, selectors), count in counts.items():
            why = (purpose, format_resources(dict(shape)) + format_selectors(selectors))
            request = Request(shape, why, selectors)
            if self._feasible(request, kind, count):
                requests.append((request, count))
        return requests

    def _pass(self, placer: Placer, requests: list[tuple[Request, int]],
              last: bool = False) -> None:
        """Place what can be placed (tasks and request_resources() need not be whole)."""
        if not requests:
            return
        attempt = placer.attempt(requests, self.pad.templates, self.pad.room)
        placer.apply(attempt, self.pad.open, last)
        for request, left in attempt.leftover():
            self.waiting[request.why] = (left, self._why_waiting(request))

    # ------------------------------------------------------------ placement groups

    def _placement_groups(self) -> None:
        def gang_order(group: PlacementGroupDemand) -> tuple:
            # Ray's _sort_gang_resource_requests: most placement constraints (each bundle of
            # a STRICT group has one), then most bundles, first; ties keep Ray's order.
            strict = group.strategy in (PG.STRICT_SPREAD, PG.STRICT_PACK)
            return (-(len(group.bundles) if strict else 0), -len(group.bundles))

        for group in sorted(self.ctx.snapshot.placement_groups, key=gang_order):
            self._place_group(group)

    def _place_group(self, group: PlacementGroupDemand) -> None:
        bundles = [(shape_of(b), group.selectors(i)) for i, b in enumerate(group.bundles)]
        bundles = [(shape, selectors) for shape, selectors in bundles if shape]
        if not bundles:
            return
        strategy = group.strategy
        why = (Purpose.PLACEMENT_GROUP, f"{group.id} ({strategy.value})")

        def text() -> str:  # only for a report: not built for every group
            return (f"{group.id} {strategy.value} ["
                    + ", ".join(format_resources(dict(shape)) + format_selectors(selectors)
                                for shape, selectors in bundles) + "]")
        key = _GROUP_LABEL + group.id
        placed = [ip for ip in group.placed_on if ip in self.sim_by_ip]
        if strategy == PG.STRICT_PACK:
            # Ray combines the bundles (of equal label selectors) into one request; bundles
            # already placed tie the rest to their node.
            combined: dict[Selectors, dict[str, float]] = {}
            for shape, selectors in bundles:
                total = combined.setdefault(selectors, {})
                for name, amount in shape:
                    total[name] = total.get(name, 0.0) + amount
            requests = [Request(shape_of(total), why, selectors, tied=key if placed else "")
                        for selectors, total in combined.items()]
        elif strategy == PG.STRICT_SPREAD:
            requests = [Request(shape, why, selectors, spread=key)
                        for shape, selectors in bundles]
        else:  # PACK and SPREAD are preferences: Ray's autoscaler packs both
            requests = [Request(shape, why, selectors) for shape, selectors in bundles]
        for request in requests:
            if not self._possible(request):
                if self._unknown_types(request):
                    self.waiting[why] = (len(bundles), self._why_waiting(request))
                else:
                    self._infeasible(DemandKind.PLACEMENT_GROUP, text(), 1,
                                     f"bundle {_shape_text(request)} "
                                     f"{self._fits_nothing(request)}")
                return
        if strategy == PG.STRICT_SPREAD:
            most = self._most_distinct_nodes(min(requests, key=Request.order), placed)
            if len(requests) > most:
                self._infeasible(DemandKind.PLACEMENT_GROUP, text(), 1,
                                 f"STRICT_SPREAD needs {len(requests)} distinct nodes"
                                 + (f" besides the {plural(len(placed), 'node')} holding "
                                    "its placed bundles" if placed else "")
                                 + f"; at most {most} can exist")
                return
        attempt = self.demand.attempt([(r, 1) for r in requests], self.pad.templates,
                                      self.pad.room)
        if attempt.complete:
            self.demand.apply(attempt, self.pad.open)
            return
        request, _ = attempt.leftover()[0]
        if request.tied:
            reason = (f"STRICT_PACK: tied to {', '.join(placed)}, where its placed bundles "
                      "are, which has no room for the rest")
        else:
            reason = self._why_waiting(request, attempt)
        self.waiting[why] = (len(bundles), reason)

    def _most_distinct_nodes(self, request: Request, placed: list[str]) -> int:
        """How many different nodes could ever hold `request`: the alive nodes outside the
        pool that can, plus every machine the configuration allows of the types that can,
        less the nodes that hold bundles of its group already."""
        key = (request.shape, request.selectors, tuple(placed))
        if key not in self._distinct_cache:
            self._distinct_cache[key] = self._count_distinct_nodes(request, placed)
        return self._distinct_cache[key]

    def _count_distinct_nodes(self, request: Request, placed: list[str]) -> int:
        ctx = self.ctx
        if self._outside is None:  # alive nodes outside the pool: usually none
            self._outside = [(ip, node) for ip, node in ctx.alive.items()
                             if ip not in ctx.current]
        outside = sum(1 for ip, node in self._outside
                      if ip not in placed and fits_in(node.total, request.shape)
                      and selectors_match(request.selectors, node.labels))
        pool = 0
        for node_type in self.config.node_types:
            resources = self.pad.resources[node_type.name]
            if (resources and fits_in(resources, request.shape)
                    and selectors_match(request.selectors, node_type.labels)):
                members = ctx.members(node_type.name)
                count = (sum(1 for m in members if m.ip not in placed) if placed
                         else len(members))
                pool += min(node_type.effective_max, count)
        if self.config.max_workers is not None:
            pool = min(pool, self.config.max_workers)
        return outside + pool

    # ------------------------------------------------------------ feasibility, reasons

    def _type_holds(self, name: str, request: Request) -> bool:
        node_type = self.config.node_type(name)
        resources = self.pad.resources[name]
        return bool(node_type and resources and fits_in(resources, request.shape)
                    and selectors_match(request.selectors, node_type.labels))

    def _possible(self, request: Request) -> bool:
        """Some machine could ever hold one bundle: a type that allows workers and carries
        the labels (Ray's `is_feasible`), or a node already in the cluster (e.g. the head)."""
        key = (request.shape, request.selectors, request.tied)
        if key not in self._possible_cache:
            self._possible_cache[key] = self._could_hold(request)
        return self._possible_cache[key]

    def _could_hold(self, request: Request) -> bool:
        if not request.tied:
            for node_type in self.config.node_types:
                if node_type.effective_max > 0 and self._type_holds(node_type.name, request):
                    return True
        # Not its group's spreading: how many distinct nodes that needs is checked apart.
        unspread = dataclasses.replace(request, spread="")
        return any(fits_in(total, request.shape) and unspread.allowed(labels)
                   for total, labels in self._alive_node_kinds())

    def _alive_node_kinds(self) -> list[tuple[Resources, dict[str, str]]]:
        """The distinct (total, labels) of the alive nodes that take work, found once: a
        thousand nodes are a handful of kinds. Labels placement adds later are groups'
        spreading keys, which neither a label selector nor another group's tie looks at."""
        if self._alive_kinds is None:
            ctx = self.ctx
            kinds: dict[tuple, tuple[Resources, dict[str, str]]] = {}
            for ip, node in ctx.alive.items():
                sim = self.sim_by_ip.get(ip)
                if ip not in ctx.leaving and sim is not None:
                    key = (tuple(sorted(node.total.items())), tuple(sorted(sim.labels.items())))
                    kinds.setdefault(key, (node.total, dict(sim.labels)))
            self._alive_kinds = list(kinds.values())
        return self._alive_kinds

    def _unknown_types(self, request: Request) -> list[str]:
        """Types that might hold it once a machine of theirs shows what it offers."""
        return [t.name for t in self.config.node_types
                if not self.pad.resources[t.name] and t.effective_max > 0
                and selectors_match(request.selectors, t.labels)]

    def _fits_nothing(self, request: Request) -> str:
        types = self.config.node_types
        by_resources = [t.name for t in types if self.pad.resources[t.name]
                        and fits_in(self.pad.resources[t.name] or {}, request.shape)]
        if request.selectors and by_resources:
            offers = ", ".join(f"{name} {dict(self.config.node_type(name).labels)}"
                               for name in by_resources)
            return (f"needs labels {' or '.join(str(s) for s in request.selectors)}, which no "
                    f"node type that fits it carries ({offers}) nor any node in the cluster")
        offers = ", ".join(f"{t.name} {format_resources(self.pad.resources[t.name] or {})}"
                           for t in types)
        return f"fits no node type ({offers or 'none'}) and no node in the cluster"

    def _feasible(self, request: Request, kind: DemandKind, count: int) -> bool:
        if self._possible(request):
            return True
        if self._unknown_types(request):
            self.waiting[request.why] = (count, self._why_waiting(request))
        else:
            self._infeasible(kind, request.why[1], count, self._fits_nothing(request))
        return False

    def _infeasible(self, kind: DemandKind, demand: str, count: int, reason: str) -> None:
        self.ctx.infeasible.append(Infeasible(kind=kind, demand=demand, count=count,
                                              reason=reason))

    def _why_waiting(self, request: Request, attempt: Attempt | None = None) -> str:
        """Why bundles that could run somewhere wait: the limits of exactly the types that
        could hold them, never of one that could not."""
        reserved = attempt.new_counts() if attempt is not None else {}
        reserved_total = sum(reserved.values())
        reasons = []
        for node_type in self.config.node_types:
            name = node_type.name
            if not self.pad.resources[name]:
                if node_type.effective_max > 0 and selectors_match(request.selectors,
                                                                   node_type.labels):
                    reasons.append(f"type {name} declares no resources and none of its "
                                   "machines is ALIVE yet")
                continue
            mine = reserved.get(name, 0)
            if self._type_holds(name, request) and not self.pad.room(name, mine,
                                                                     reserved_total):
                reasons.append(self.pad.blocked(name, mine, reserved_total))
        return "; ".join(dict.fromkeys(reasons)) or "only nodes busy with other work fit it"

    # ------------------------------------------------------------ launches

    def _launch(self) -> None:
        """Cut the plan to what may start now. Per type, pending launches are at most
        max(1, ceil(upscaling_speed x max(running, 1))), running counting the head when it
        is of the type (Ray v2 `Reconciler._compute_to_launch`), less the machines already
        joining (v1 `_get_concurrent_resource_demand_to_launch`), but never fewer than the
        machines for min_workers, request_resources() and placement groups; then at most
        max_concurrent_launches joining in all."""
        ctx, config = self.ctx, self.config
        joining = Counter(m.node_type for m in ctx.current.values() if m.state == S.JOINING)
        budget = max(0, config.max_concurrent_launches - sum(joining.values()))
        for node_type in config.node_types:
            name = node_type.name
            planned = self.pad.opened[name]
            if not planned:
                continue
            running = sum(1 for m in ctx.members(name)
                          if m.state == S.ACTIVE and m.ip in ctx.alive)
            if config.head_node_type == name:
                running += 1
            cap = max(1, math.ceil(config.upscaling_speed * max(running, 1)))
            urgent_nodes = [node for node in planned if any(p.urgent for p, _ in node.why)]
            urgent = len(urgent_nodes)
            allowed = max(cap - joining[name], urgent)
            count = min(len(planned), allowed, budget)
            budget -= count
            if count < min(len(planned), allowed):
                ctx.notes.append(
                    f"holding {len(planned) - count} of {len(planned)} planned adds of type "
                    f"{name}: max_concurrent_launches {config.max_concurrent_launches} "
                    f"reached ({sum(joining.values())} joining)")
            elif count < len(planned):
                ctx.notes.append(
                    f"holding {len(planned) - count} of {len(planned)} planned adds of type "
                    f"{name}: upscaling_speed {config.upscaling_speed:g} with {running} "
                    f"running allows {cap} pending, {joining[name]} already joining")
            if count <= 0:
                continue
            # Nodes for demand that must start at once go first (each keeps its place).
            if 0 < urgent < len(planned):
                first = set(urgent_nodes)
                planned[:] = urgent_nodes + [node for node in planned if node not in first]
            ips = [machine.ip for machine in self.pad.candidates[name][:count]]
            for node, ip in zip(planned, ips, strict=False):
                node.ip = ip
            reason = _add_reason(name, planned[:count], node_type.effective_min,
                                 config.min_workers, ips)
            ctx.act(Phase.ADD, ActionKind.ADD, Event.ADD_REQUESTED, name, ips, reason)


def _shape_text(request: Request) -> str:
    return format_resources(dict(request.shape)) + format_selectors(request.selectors)


def _describe(why: Why, count: int) -> str:
    purpose, text = why
    noun = "bundle" if count == 1 else "bundles"
    shape, with_labels, labels = text.partition(" with labels ")
    if purpose == Purpose.PENDING:
        return f"{count} pending {shape} {noun}{with_labels}{labels}"
    if purpose == Purpose.CONSTRAINT:
        return f"{count} request_resources {shape} {noun}{with_labels}{labels}"
    if purpose == Purpose.PLACEMENT_GROUP:
        return f"{plural(count, 'bundle')} of placement group {text}"
    return text


def _add_reason(name: str, nodes: list[SimNode], type_min: int, global_min: int,
                ips: list[str]) -> str:
    totals: dict[Why, int] = {}
    for node in nodes:
        for why, count in node.why.items():
            totals[why] = totals.get(why, 0) + count
    parts = []
    if totals.pop((Purpose.MIN_WORKERS, name), 0):
        parts.append(f"type {name} is below min_workers {type_min}")
    if totals.pop((Purpose.GLOBAL_MIN, ""), 0):
        parts.append(f"the cluster is below min_workers {global_min}")
    demand = [_describe(why, count) for why, count in totals.items()]
    if demand:
        verb = "fits" if sum(totals.values()) == 1 else "fit"
        parts.append(f"{', '.join(demand)} {verb} on type {name}")
    return f"{'; '.join(parts)}: add {', '.join(ips)}"

