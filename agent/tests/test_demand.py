"""Ray adapter records -> the decision's DemandSnapshot."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from onprem_ray_agent.adapters.ray_state import Bundles, RaySnapshot
from onprem_ray_agent.adapters.ray_state import PlacementGroupDemand as RayPG
from onprem_ray_agent.adapters.ray_state import RayNode as RayStateNode
from onprem_ray_agent.demand import demand_snapshot, has_demand, pending_by_resource
from onprem_ray_agent.model import PlacementStrategy, RayNodeState


def shape(**amounts: float) -> MappingProxyType:
    return MappingProxyType(dict(amounts))


def ray_node(ip: str, alive: bool = True, idle_s: float = 0.0) -> RayStateNode:
    return RayStateNode(node_id=f"id-{ip}", ip=ip, alive=alive, is_head=False,
                        total=shape(CPU=4.0), available=shape(CPU=1.5), idle_s=idle_s)


def snapshot(**kwargs) -> RaySnapshot:
    kwargs.setdefault("nodes", ())
    kwargs.setdefault("task_actor_demand", ())
    kwargs.setdefault("placement_groups", ())
    kwargs.setdefault("constraints", ())
    return RaySnapshot(query_s=0.01, **kwargs)


def test_pending_bundles_keep_their_counts_and_empty_ones_are_dropped():
    result = demand_snapshot(snapshot(task_actor_demand=(
        Bundles(shape(CPU=1.0), 3), Bundles(shape(GPU=1.0, CPU=2.0), 1),
        Bundles(shape(CPU=9.0), 0))))
    assert [(dict(b.resources), b.count) for b in result.pending] == [
        ({"CPU": 1.0}, 3), ({"GPU": 1.0, "CPU": 2.0}, 1)]
    assert has_demand(result)


@pytest.mark.parametrize(("given", "expected"), [
    ("PACK", PlacementStrategy.PACK),
    ("SPREAD", PlacementStrategy.SPREAD),
    ("STRICT_PACK", PlacementStrategy.STRICT_PACK),
    ("STRICT_SPREAD", PlacementStrategy.STRICT_SPREAD),
    ("strict_spread", PlacementStrategy.STRICT_SPREAD),
    ("SOMETHING_NEW", PlacementStrategy.PACK),
])
def test_placement_groups_keep_their_strategy_and_every_bundle(given, expected):
    group = RayPG(pg_id="pg1", strategy=given,
                  bundles=(Bundles(shape(CPU=2.0), 2), Bundles(shape(GPU=1.0), 1)))
    (result,) = demand_snapshot(snapshot(placement_groups=(group,))).placement_groups
    assert result.id == "pg1"
    assert result.strategy == expected
    assert [dict(b) for b in result.bundles] == [{"CPU": 2.0}, {"CPU": 2.0}, {"GPU": 1.0}]


def test_constraints_are_not_pending_work():
    result = demand_snapshot(snapshot(constraints=(Bundles(shape(CPU=1.0), 8),)))
    assert [(dict(b.resources), b.count) for b in result.constraints] == [({"CPU": 1.0}, 8)]
    assert result.pending == ()
    assert not has_demand(result)


def test_nodes_keep_state_resources_and_idle_time():
    result = demand_snapshot(snapshot(nodes=(ray_node("10.0.1.1", idle_s=12.5),
                                             ray_node("10.0.1.2", alive=False))))
    alive, dead = result.nodes
    assert (alive.ip, alive.state, alive.node_id) == ("10.0.1.1", RayNodeState.ALIVE,
                                                      "id-10.0.1.1")
    assert (dict(alive.total), dict(alive.available), alive.idle_s) == (
        {"CPU": 4.0}, {"CPU": 1.5}, 12.5)
    assert dead.state == RayNodeState.DEAD


def test_pending_by_resource_adds_tasks_and_placement_groups():
    result = demand_snapshot(snapshot(
        task_actor_demand=(Bundles(shape(CPU=1.0), 3),),
        placement_groups=(RayPG("pg", "PACK", (Bundles(shape(CPU=2.0, GPU=1.0), 2),)),),
        constraints=(Bundles(shape(CPU=100.0), 1),)))
    assert pending_by_resource(result) == {"CPU": 7.0, "GPU": 2.0}
