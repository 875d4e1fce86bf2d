"""What the rest of the agent asks of a `DemandSnapshot` (metrics, status, the loop). Pure."""

from __future__ import annotations

from onprem_ray_agent.model import DemandSnapshot


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
