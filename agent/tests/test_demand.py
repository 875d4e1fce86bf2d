# ruff: noqa: F821 - Ray's proto classes are bound by the _ray_protos fixture
"""Ray's `ClusterResourceState` (real protos, built here) -> the model's `DemandSnapshot`, and
the demand helpers. The contract tests hold the same conversion to a real Ray head."""

from __future__ import annotations

import pytest

from onprem_ray_agent.adapters import ray_state
from onprem_ray_agent.demand import has_demand, pending_by_resource
from onprem_ray_agent.model import (
    LabelConstraint,
    LabelOperator,
    LabelSelector,
    PlacementStrategy,
    RayNodeState,
)

IN, NOT_IN = 1, 2  # common.proto LabelSelectorOperator


@pytest.fixture(autouse=True)
def _ray_protos() -> None:
    """Ray's protos, imported when a test runs, not when it is collected: importing Ray fixes
    its token settings for the process, which the contract tests set first."""
    from ray.core.generated import autoscaler_pb2, common_pb2

    names = ("AffinityConstraint", "AntiAffinityConstraint", "BundleSelector",
             "ClusterResourceConstraint", "ClusterResourceState", "GangResourceRequest",
             "NodeState", "NodeStatus", "PlacementConstraint", "ResourceRequest",
             "ResourceRequestByCount")
    globals().update({name: getattr(autoscaler_pb2, name) for name in names})
    globals().update(RayLabelSelector=common_pb2.LabelSelector,
                     LabelSelectorConstraint=common_pb2.LabelSelectorConstraint)
    assert (IN, NOT_IN) == (common_pb2.LabelSelectorOperator.LABEL_OPERATOR_IN,
                            common_pb2.LabelSelectorOperator.LABEL_OPERATOR_NOT_IN)


def _selector(*constraints: tuple[str, int, tuple[str, ...]]):
    return RayLabelSelector(label_constraints=[
        LabelSelectorConstraint(label_key=key, operator=op, label_values=list(values))
        for key, op, values in constraints])


def _node(ip: str, status: int = 1, **kwargs):  # 1: NodeStatus.RUNNING
    kwargs.setdefault("total_resources", {"CPU": 4.0, "node:" + ip: 1.0})
    return NodeState(node_id=bytes.fromhex("ab" * 28), node_ip_address=ip, status=status,
                     **kwargs)


def test_the_adapters_status_numbers_are_rays() -> None:
    assert (ray_state.NODE_DEAD, ray_state.NODE_IDLE) == (NodeStatus.DEAD, NodeStatus.IDLE)


def test_nodes_with_labels_idle_time_and_the_head() -> None:
    state = ClusterResourceState(node_states=[
        _node("10.0.0.1", total_resources={"CPU": 2.0, ray_state.HEAD_MARKER: 1.0},
              available_resources={"CPU": 2.0}),
        _node("10.0.1.1", NodeStatus.IDLE, idle_duration_ms=12_500,
              available_resources={"CPU": 4.0}, labels={"zone": "a"}),
        _node("10.0.1.2", NodeStatus.RUNNING, idle_duration_ms=9_000),
        _node("10.0.1.3", NodeStatus.DEAD),
    ])
    head, idle, busy, dead = ray_state.snapshot_from_state(state).nodes
    assert head.is_head and head.total == {"CPU": 2.0}
    assert idle.idle_s == 12.5 and idle.labels == {"zone": "a"}
    assert idle.total == {"CPU": 4.0}  # no node: marker resources
    assert busy.idle_s == 0.0 and busy.available == {"CPU": 0.0}
    assert dead.state == RayNodeState.DEAD and not idle.is_head


def test_pending_tasks_carry_their_label_selectors() -> None:
    request = ResourceRequest(resources_bundle={"CPU": 1.0}, label_selectors=[
        _selector(("gpu", IN, ("a100", "h100")), ("zone", NOT_IN, ("b",))),
        _selector(("gpu", IN, ("l4",)))])
    state = ClusterResourceState(pending_resource_requests=[
        ResourceRequestByCount(request=request, count=3),
        ResourceRequestByCount(request=ResourceRequest(resources_bundle={"GPU": 1.0}),
                               count=0)])
    snapshot = ray_state.snapshot_from_state(state)
    (bundle,) = snapshot.pending
    assert bundle.count == 3 and dict(bundle.resources) == {"CPU": 1.0}
    assert bundle.label_selectors == (
        LabelSelector((LabelConstraint("gpu", LabelOperator.IN, ("a100", "h100")),
                       LabelConstraint("zone", LabelOperator.NOT_IN, ("b",)))),
        LabelSelector((LabelConstraint("gpu", LabelOperator.IN, ("l4",)),)))
    assert has_demand(snapshot)


def test_rays_empty_selector_is_none() -> None:
    request = ResourceRequest(resources_bundle={"CPU": 1.0}, label_selectors=[_selector()])
    state = ClusterResourceState(pending_resource_requests=[
        ResourceRequestByCount(request=request, count=1)])
    assert ray_state.snapshot_from_state(state).pending[0].label_selectors == ()


def test_an_unknown_operator_matches_no_node_as_in_rays_scheduler() -> None:
    request = ResourceRequest(resources_bundle={"CPU": 1.0},
                              label_selectors=[_selector(("zone", 0, ("a",)))])
    state = ClusterResourceState(pending_resource_requests=[
        ResourceRequestByCount(request=request, count=1)])
    (selector,) = ray_state.snapshot_from_state(state).pending[0].label_selectors
    assert not selector.matches({"zone": "a"}) and not selector.matches({})


def test_a_partly_placed_strict_spread_group_names_the_nodes_that_hold_its_bundles() -> None:
    mark = PlacementConstraint(anti_affinity=AntiAffinityConstraint(
        label_name="_PG_abc", label_value="abc"))
    gang = GangResourceRequest(
        requests=[ResourceRequest(resources_bundle={"CPU": 1.0}, placement_constraints=[mark],
                                  label_selectors=[_selector(("zone", IN, ("a",)))])],
        details="abc:STRICT_SPREAD|RESCHEDULING")
    state = ClusterResourceState(
        node_states=[_node("10.0.1.1", dynamic_labels={"_PG_abc": "abc"}),
                     _node("10.0.1.2", dynamic_labels={"_PG_other": "other"}),
                     _node("10.0.1.3", NodeStatus.DEAD, dynamic_labels={"_PG_abc": "abc"})],
        pending_gang_resource_requests=[gang])
    (group,) = ray_state.snapshot_from_state(state).placement_groups
    assert group.id == "abc" and group.strategy == PlacementStrategy.STRICT_SPREAD
    assert group.bundles == ({"CPU": 1.0},)
    assert group.placed_on == ("10.0.1.1",)
    assert group.selectors(0)[0].matches({"zone": "a"})


def test_bundle_selectors_win_over_the_legacy_requests() -> None:
    mark = PlacementConstraint(affinity=AffinityConstraint(label_name="_PG_p",
                                                           label_value="p"))
    bundle = ResourceRequest(resources_bundle={"GPU": 1.0}, placement_constraints=[mark],
                             label_selectors=[_selector(("gpu", IN, ("a100",)))])
    gang = GangResourceRequest(
        requests=[ResourceRequest(resources_bundle={"GPU": 1.0})] * 2,
        bundle_selectors=[BundleSelector(resource_requests=[bundle, bundle])],
        details="p:STRICT_PACK|PENDING")
    (group,) = ray_state.snapshot_from_state(
        ClusterResourceState(pending_gang_resource_requests=[gang])).placement_groups
    assert group.strategy == PlacementStrategy.STRICT_PACK
    assert len(group.bundle_selectors) == 2 and group.placed_on == ()


def test_constraints_and_the_legacy_request_resources_key() -> None:
    state = ClusterResourceState(cluster_resource_constraints=[ClusterResourceConstraint(
        resource_requests=[ResourceRequestByCount(
            request=ResourceRequest(resources_bundle={"CPU": 1.0}), count=8)])])
    (floor,) = ray_state.snapshot_from_state(state).constraints
    assert (dict(floor.resources), floor.count) == ({"CPU": 1.0}, 8)
    legacy = ray_state.snapshot_from_state(ClusterResourceState(),
                                           b'[{"CPU": 2}, {"CPU": 2}, {"GPU": 1}]')
    assert [(dict(b.resources), b.count) for b in legacy.constraints] == [
        ({"CPU": 2.0}, 2), ({"GPU": 1.0}, 1)]
    assert not has_demand(legacy)


def test_pending_by_resource_adds_tasks_and_placement_groups() -> None:
    gang = GangResourceRequest(requests=[ResourceRequest(resources_bundle={"GPU": 1.0})] * 2,
                               details="g:PACK|PENDING")
    state = ClusterResourceState(
        pending_resource_requests=[ResourceRequestByCount(
            request=ResourceRequest(resources_bundle={"CPU": 2.5}), count=2)],
        pending_gang_resource_requests=[gang])
    assert pending_by_resource(ray_state.snapshot_from_state(state)) == {"CPU": 5.0, "GPU": 2.0}
