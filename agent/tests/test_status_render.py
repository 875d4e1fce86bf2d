"""`status` shows the demand's labels: selectors of tasks and placement group bundles, the
nodes a partly placed group is on, and each node's labels in the JSON."""

from __future__ import annotations

from onprem_ray_agent.codec import machine_to_dict
from onprem_ray_agent.loop import IterationReport
from onprem_ray_agent.model import (
    Action,
    ActionKind,
    BundleDemand,
    Decision,
    DemandSnapshot,
    Event,
    LabelConstraint,
    LabelOperator,
    LabelSelector,
    Machine,
    MachineState,
    PlacementGroupDemand,
    PlacementStrategy,
    RayNode,
)
from onprem_ray_agent.status import demand_to_dict, render, report_to_dict

A100 = LabelSelector((LabelConstraint("gpu", LabelOperator.IN, ("a100", "h100")),))
NOT_RACK = LabelSelector((LabelConstraint("zone", LabelOperator.NOT_IN, ("rack-9",)),))
DEMAND = DemandSnapshot(
    pending=(BundleDemand({"GPU": 1}, 2, (A100, NOT_RACK)), BundleDemand({"CPU": 1}, 3)),
    placement_groups=(PlacementGroupDemand(
        "pg1", PlacementStrategy.STRICT_SPREAD, ({"CPU": 1}, {"CPU": 1}),
        bundle_selectors=((NOT_RACK,), ()), placed_on=("10.0.1.1",)),),
    nodes=(RayNode("10.0.0.1", labels={"zone": "rack-1"}),))


def test_the_json_carries_selectors_placed_bundles_and_node_labels() -> None:
    data = demand_to_dict(DEMAND)
    gpu, cpu = data["pending"]
    assert gpu["label_selector"] == {"gpu": "in(a100,h100)"}
    assert gpu["fallback_label_selectors"] == [{"zone": "!rack-9"}]
    assert "label_selector" not in cpu
    (group,) = data["placement_groups"]
    assert group["bundle_label_selectors"] == [{"zone": "!rack-9"}, {}]
    assert group["placed_on"] == ["10.0.1.1"]
    assert data["nodes"][0]["labels"] == {"zone": "rack-1"}


def test_the_text_shows_them() -> None:
    report = report_to_dict(IterationReport(now=100.0, demand=DEMAND))
    text = render({"machines": [], "running": [], "recent_runs": [], "last_iteration": report,
                   "next": report, "next_is_fresh": True}, 100.0)
    assert ("2 x {'GPU': 1} with labels {gpu=in(a100,h100)} or {zone=!rack-9} "
            "(tasks and actors)") in text
    assert "3 x {'CPU': 1} (tasks and actors)" in text
    assert ("placement group pg1 STRICT_SPREAD (partly placed, on 10.0.1.1): "
            "{'CPU': 1} with labels {zone=!rack-9}, {'CPU': 1}") in text


def test_the_text_shows_a_canceled_join_and_the_cancel_with_its_reason() -> None:
    reason = ("no demand needs 10.0.1.2 (add run add-cpu-40-abc) for 31 s, since 69 "
              "(cancel_join_after_s 30): cancel the run; Ray is then stopped there and the "
              "machines are spare")
    decision = Decision(now=100.0, actions=(Action(
        ActionKind.CANCEL, Event.JOIN_CANCELED, ("10.0.1.2",), "cpu", reason,
        "add-cpu-40-abc"),), unneeded_since={"add-cpu-40-abc": 69.0})
    report = report_to_dict(IterationReport(now=100.0, demand=DemandSnapshot(),
                                            decision=decision))
    canceled = Machine("10.0.1.3", "cpu", MachineState.CANCELED, 90.0,
                       reason="add_workers run add-cpu-1 canceled before it was done")
    text = render({"machines": [machine_to_dict(canceled)], "running": [], "recent_runs": [],
                   "last_iteration": report, "next": report, "next_is_fresh": True}, 100.0)
    assert f"  cancel 10.0.1.2: {reason}" in text
    assert "10.0.1.3  cpu          canceled" in text
    assert report["decision"]["unneeded_since"] == {"add-cpu-40-abc": 69.0}
