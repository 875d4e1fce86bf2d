"""Ray's snapshot (the adapter's records) -> the decision's `DemandSnapshot`. Pure."""

from __future__ import annotations

from onprem_ray_agent.adapters import ray_state
from onprem_ray_agent.model import (
    BundleDemand,
    DemandSnapshot,
    PlacementGroupDemand,
    PlacementStrategy,
    RayNode,
    RayNodeState,
)


def _bundles(bundles: tuple[ray_state.Bundles, ...]) -> tuple[BundleDemand, ...]:
    return tuple(BundleDemand(resources=dict(b.shape), count=b.count)
                 for b in bundles if b.count > 0)


def _strategy(name: str) -> PlacementStrategy:
    try:
        return PlacementStrategy(name.upper())
    except ValueError:
        # Ray's default strategy; a name this agent does not know is planned as best effort.
        return PlacementStrategy.PACK


def _placement_group(group: ray_state.PlacementGroupDemand) -> PlacementGroupDemand:
    bundles = tuple(dict(b.shape) for b in group.bundles for _ in range(b.count))
    return PlacementGroupDemand(id=group.pg_id, strategy=_strategy(group.strategy),
                                bundles=bundles)


def _node(node: ray_state.RayNode) -> RayNode:
    return RayNode(
        ip=node.ip,
        state=RayNodeState.ALIVE if node.alive else RayNodeState.DEAD,
        node_id=node.node_id,
        total=dict(node.total),
        available=dict(node.available),
        idle_s=node.idle_s,
    )


def demand_snapshot(snapshot: ray_state.RaySnapshot) -> DemandSnapshot:
    """Pending bundles with counts, placement groups with their strategy, request_resources()
    constraints and every node Ray lists."""
    return DemandSnapshot(
        pending=_bundles(snapshot.task_actor_demand),
        placement_groups=tuple(_placement_group(g) for g in snapshot.placement_groups
                               if g.bundles),
        constraints=_bundles(snapshot.constraints),
        nodes=tuple(_node(n) for n in snapshot.nodes),
    )


def has_demand(snapshot: DemandSnapshot) -> bool:
    """Ray waits for something: pending tasks or actors, or a placement group."""
    return bool(snapshot.pending or snapshot.placement_groups)


def pending_by_resource(snapshot: DemandSnapshot) -> dict[str, float]:
    """How much of each resource pending tasks, actors and placement groups ask for."""
    totals: dict[str, float] = {}
    shapes = [(b.resources, b.count) for b in snapshot.pending]
    shapes += [(bundle, 1) for g in snapshot.placement_groups for bundle in g.bundles]
    for resources, count in shapes:
        for name, amount in resources.items():
            totals[name] = totals.get(name, 0.0) + float(amount) * count
    return totals
