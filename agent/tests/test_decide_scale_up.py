"""Scale up: demand is bin-packed onto free capacity first, then onto new machines of the
node types that can hold it (Ray autoscaler v2's ResourceDemandScheduler order)."""

from __future__ import annotations

import pytest
from decide_fixtures import (
    HEAD,
    add_counts,
    added,
    bundles,
    busy,
    config,
    group,
    ip,
    machine,
    node_type,
    ray_node,
    run,
    snapshot,
    worker,
)

from onprem_ray_agent.model import DemandKind, DemandSnapshot, NodeType

CPU = config(node_type("cpu", 4))
CPU_GPU = config(node_type("cpu", 3), node_type("gpu", 2))
GPU_FIRST = config(node_type("gpu", 2), node_type("cpu", 3))
CPU_BIG = config(node_type("cpu", 3), node_type("big", 2))


def _active(name: str, *indexes: int):
    return [machine(name, i, "active") for i in indexes]


def _joining(name: str, *indexes: int):
    return [machine(name, i, "joining") for i in indexes]


PACKING = [
    pytest.param(CPU, [], snapshot(), {}, id="no-demand-no-add"),
    pytest.param(CPU, _active("cpu", 1), snapshot(worker("cpu", 1),
                                                  pending=[bundles({"CPU": 1}, 4)]),
                 {}, id="fits-free-capacity-of-an-alive-worker"),
    pytest.param(CPU, _active("cpu", 1), snapshot(worker("cpu", 1, free={"CPU": 1}),
                                                  pending=[bundles({"CPU": 1}, 4)]),
                 {"cpu": 1}, id="overflow-of-an-alive-worker"),
    pytest.param(CPU, _joining("cpu", 1), snapshot(pending=[bundles({"CPU": 1}, 4)]),
                 {}, id="fits-a-machine-already-joining"),
    pytest.param(CPU, _joining("cpu", 1), snapshot(pending=[bundles({"CPU": 1}, 5)]),
                 {"cpu": 1}, id="overflow-of-a-joining-machine"),
    pytest.param(CPU, [], snapshot(pending=[bundles({"CPU": 1}, 6)]), {"cpu": 2},
                 id="six-one-cpu-bundles-need-two-four-cpu-machines"),
    pytest.param(CPU, [], snapshot(pending=[bundles({"CPU": 1}, 3), bundles({"CPU": 1}, 3)]),
                 {"cpu": 2}, id="equal-shapes-are-counted-together"),
    pytest.param(CPU, [], snapshot(pending=[bundles({"CPU": 3}, 2), bundles({"CPU": 1}, 2)]),
                 {"cpu": 2}, id="small-bundles-fill-the-gaps-of-big-ones"),
    pytest.param(CPU, [], snapshot(pending=[bundles({"CPU": 0}, 50), bundles({}, 3)]), {},
                 id="zero-resource-bundles-need-nothing"),
    pytest.param(CPU, [], snapshot(pending=[bundles({"CPU": 1}, 100)]), {"cpu": 4},
                 id="never-more-than-the-pool"),
    pytest.param(CPU_GPU, [], snapshot(pending=[bundles({"GPU": 1}, 1)]), {"gpu": 1},
                 id="a-gpu-bundle-goes-to-the-gpu-type"),
    pytest.param(GPU_FIRST, [], snapshot(pending=[bundles({"CPU": 1}, 2)]), {"cpu": 1},
                 id="cpu-work-avoids-gpu-machines-even-listed-first"),
    pytest.param(config(node_type("cpu", 1), node_type("gpu", 2)), _active("cpu", 1),
                 snapshot(busy("cpu", 1), pending=[bundles({"CPU": 1}, 2)]), {"gpu": 1},
                 id="cpu-work-falls-back-to-gpu-machines-when-no-cpu-machine-is-left"),
    pytest.param(CPU_GPU, [], snapshot(pending=[bundles({"CPU": 2, "GPU": 1}, 1),
                                                bundles({"CPU": 1}, 6)]),
                 {"gpu": 1}, id="cpu-work-uses-the-room-left-on-a-planned-gpu-machine"),
    pytest.param(CPU_BIG, [], snapshot(pending=[bundles({"CPU": 8}, 1)]), {"big": 1},
                 id="a-bundle-too-big-for-one-type-goes-to-a-type-that-fits"),
    pytest.param(CPU_BIG, [], snapshot(pending=[bundles({"CPU": 4}, 2)]), {"cpu": 2},
                 id="best-utilization-type-wins"),
    pytest.param(config(node_type("cpu", 2, resources={})),
                 _active("cpu", 1), snapshot(busy("cpu", 1), pending=[bundles({"CPU": 1}, 2)]),
                 {"cpu": 1}, id="undeclared-resources-are-learnt-from-an-alive-machine"),
    pytest.param(CPU, [], snapshot(pending=[bundles(
        {"node:__internal_implicit_resource_x": 1, "CPU": 1}, 2)]), {"cpu": 2},
                 id="implicit-resources-are-one-per-node"),
]


@pytest.mark.parametrize(("cfg", "machines", "snap", "expected"), PACKING)
def test_packing(cfg, machines, snap, expected) -> None:
    assert add_counts(run(cfg, machines, snap)) == expected


def test_the_reason_says_what_fits_where() -> None:
    decision = run(CPU, [], snapshot(pending=[bundles({"CPU": 1}, 2)]))
    (action,) = decision.actions[-1:]
    assert action.reason == (f"2 pending {{'CPU': 1}} bundles fit on type cpu: "
                             f"add {ip('cpu', 1)}")
    assert action.request_id.startswith("add-cpu-")


def test_every_planned_machine_is_explained() -> None:
    decision = run(CPU_GPU, [], snapshot(pending=[bundles({"GPU": 1}, 1),
                                                  bundles({"CPU": 4}, 1)],
                                         groups=[group("pg1", "STRICT_SPREAD", {"CPU": 1},
                                                       {"CPU": 1})]))
    reasons = {a.node_type: a.reason for a in decision.actions if a.kind == "add"}
    assert "placement group pg1 (STRICT_SPREAD)" in reasons["cpu"]
    # Ray's score puts the CPU task beside the GPU one: the gpu machine matches both kinds.
    assert ("1 pending {'CPU': 4} bundle, 1 pending {'GPU': 1} bundle fit on type gpu"
            in reasons["gpu"])


# ------------------------------------------------------------------ placement groups

IDLE_WORKER = (_active("cpu", 1), worker("cpu", 1))  # 4 free CPUs

STRATEGIES = [
    pytest.param("PACK", [{"CPU": 1}] * 3, 0, id="PACK-fits-one-free-node"),
    pytest.param("SPREAD", [{"CPU": 1}] * 3, 0, id="SPREAD-is-best-effort-and-packs-if-it-must"),
    pytest.param("STRICT_SPREAD", [{"CPU": 1}] * 3, 2, id="STRICT_SPREAD-needs-distinct-nodes"),
    pytest.param("STRICT_PACK", [{"CPU": 2}] * 2, 0, id="STRICT_PACK-fits-one-node"),
    pytest.param("STRICT_PACK", [{"CPU": 1}] * 5, 0,
                 id="STRICT_PACK-too-big-for-any-type-adds-nothing"),
    pytest.param("PACK", [{"CPU": 2}] * 4, 1, id="PACK-overflows-onto-one-new-node"),
]


@pytest.mark.parametrize(("strategy", "shapes", "expected"), STRATEGIES)
def test_placement_group_strategies(strategy, shapes, expected) -> None:
    machines, alive = IDLE_WORKER
    decision = run(CPU, machines, snapshot(alive, groups=[group("pg", strategy, *shapes)]))
    assert sum(add_counts(decision).values()) == expected


def test_strict_pack_goes_to_a_type_that_holds_the_whole_group() -> None:
    decision = run(CPU_BIG, [], snapshot(groups=[group("pg", "STRICT_PACK", *[{"CPU": 2}] * 3)]))
    assert add_counts(decision) == {"big": 1}


def test_strict_pack_that_no_type_holds_is_infeasible() -> None:
    decision = run(CPU, [], snapshot(groups=[group("pg", "STRICT_PACK", *[{"CPU": 3}] * 2)]))
    (item,) = decision.infeasible
    assert item.kind == DemandKind.PLACEMENT_GROUP
    assert item.demand == "pg STRICT_PACK [{'CPU': 3}, {'CPU': 3}]"
    assert item.reason.startswith("bundle {'CPU': 6} fits no node type")
    assert added(decision) == {}


def test_strict_spread_wider_than_the_pool_is_infeasible() -> None:
    decision = run(config(node_type("cpu", 2)), [],
                   snapshot(groups=[group("wide", "STRICT_SPREAD", *[{"CPU": 1}] * 3)]))
    (item,) = decision.infeasible
    assert "needs 3 distinct nodes; at most 2 can exist" in item.reason
    assert added(decision) == {}


def test_a_gang_is_planned_whole_or_not_at_all() -> None:
    # 3 machines, one quarantined: a 3-wide STRICT_SPREAD cannot be met now, so nothing is
    # added for it (a partial gang would only hold machines idle).
    machines = [machine("cpu", 3, "quarantined", failures=5)]
    decision = run(config(node_type("cpu", 3)), machines,
                   snapshot(groups=[group("pg", "STRICT_SPREAD", *[{"CPU": 1}] * 3)]))
    assert added(decision) == {}
    assert decision.infeasible == ()
    assert any(n.startswith("waiting: 3 bundles of placement group pg (STRICT_SPREAD)")
               and "1 quarantined" in n for n in decision.notes)


def test_placement_groups_go_before_tasks() -> None:
    # One machine left: the placement group gets it, the tasks wait.
    decision = run(config(node_type("cpu", 1)), [],
                   snapshot(pending=[bundles({"CPU": 4}, 1)],
                            groups=[group("pg", "PACK", {"CPU": 4})]))
    assert "placement group pg" in decision.actions[-1].reason
    assert any("waiting: 1 pending {'CPU': 4} bundle" in n for n in decision.notes)


# ------------------------------------------------------------------ request_resources


CONSTRAINTS = [
    pytest.param([], [], [bundles({"CPU": 1}, 8)], 2, id="floor-on-an-empty-cluster"),
    pytest.param(_active("cpu", 1), [busy("cpu", 1)], [bundles({"CPU": 1}, 8)], 1,
                 id="floor-counts-busy-capacity-as-idle"),
    pytest.param(_active("cpu", 1, 2), [busy("cpu", 1), busy("cpu", 2)],
                 [bundles({"CPU": 1}, 8)], 0, id="floor-already-met"),
    pytest.param(_joining("cpu", 1), [], [bundles({"CPU": 4}, 2)], 1,
                 id="floor-counts-joining-machines"),
]


@pytest.mark.parametrize(("machines", "alive", "constraints", "expected"), CONSTRAINTS)
def test_request_resources_is_a_floor_of_capacity(machines, alive, constraints,
                                                    expected) -> None:
    decision = run(CPU, machines, snapshot(*alive, constraints=constraints))
    assert sum(add_counts(decision).values()) == expected


@pytest.mark.parametrize(("pending", "expected"), [
    pytest.param(8, 2, id="work-within-the-floor-uses-its-machines"),
    pytest.param(12, 3, id="work-beyond-the-floor-adds-more"),
])
def test_the_floor_is_a_cluster_size_not_extra_work(pending, expected) -> None:
    # Ray packs request_resources() onto total capacity and pending work onto free capacity,
    # separately (v2 ResourceRequestSource): machines added for the floor take work too.
    decision = run(CPU, [], snapshot(constraints=[bundles({"CPU": 1}, 8)],
                                     pending=[bundles({"CPU": 1}, pending)]))
    assert add_counts(decision) == {"cpu": expected}


# ------------------------------------------------------------------ infeasible demand


def test_a_bundle_no_type_can_hold_is_reported_and_not_planned() -> None:
    decision = run(CPU, [], snapshot(pending=[bundles({"GPU": 1}, 3), bundles({"CPU": 1}, 1)]))
    (item,) = decision.infeasible
    assert (item.kind, item.demand, item.count) == (DemandKind.BUNDLE, "{'GPU': 1}", 3)
    assert "fits no node type (cpu {'CPU': 4})" in item.reason
    assert add_counts(decision) == {"cpu": 1}  # the feasible demand is still served


def test_infeasible_demand_is_reported_once_by_its_key() -> None:
    snap = snapshot(pending=[bundles({"GPU": 1}, 3)])
    first = run(CPU, [], snap)
    reported = {item.key for item in first.newly_infeasible(set())}
    again = run(CPU, [], snap, now=first.now + 5)
    assert again.infeasible  # still listed in every decision ...
    assert again.newly_infeasible(reported) == ()  # ... but nothing new to report


def test_a_type_allowing_no_workers_does_not_make_demand_feasible() -> None:
    cfg = config(node_type("cpu", 2), node_type("gpu", 2, max_workers=0))
    decision = run(cfg, [], snapshot(pending=[bundles({"GPU": 1})]))
    assert [i.demand for i in decision.infeasible] == ["{'GPU': 1}"]


def test_a_resource_only_an_existing_node_has_is_not_infeasible() -> None:
    head = ray_node(HEAD, total={"license": 1}, available={"license": 0})
    decision = run(CPU, [], DemandSnapshot(pending=(bundles({"license": 1}),), nodes=(head,)))
    assert decision.infeasible == ()
    assert added(decision) == {}
    assert any("only nodes busy with other work fit it" in n for n in decision.notes)


def test_a_type_without_known_resources_is_waited_for_not_declared_infeasible() -> None:
    cfg = config(NodeType("mystery", (ip("cpu", 1),)))
    decision = run(cfg, [], snapshot(pending=[bundles({"CPU": 1})]))
    assert decision.infeasible == ()
    assert any("declares no resources" in n for n in decision.notes)


def test_a_type_without_declared_resources_learns_them_from_a_head_of_that_type() -> None:
    # Ray's local provider: head and workers are one type, nothing declared, no worker running.
    cfg = config(NodeType("local", (ip("cpu", 1), ip("cpu", 2))), head_node_type="local")
    head = ray_node(HEAD, total={"CPU": 2}, available={"CPU": 0})
    decision = run(cfg, [], DemandSnapshot(pending=(bundles({"CPU": 1}, 3),), nodes=(head,)))
    assert added(decision) == {"local": (ip("cpu", 1), ip("cpu", 2))}


def test_request_resources_that_cannot_be_met_whole_adds_nothing_and_says_so() -> None:
    # 4 spare machines of 4 CPUs and a head with none: 5 x {CPU: 4} cannot be met whole.
    decision = run(CPU, [], snapshot(constraints=[bundles({"CPU": 4}, 5)]))
    assert add_counts(decision) == {}
    assert any("request_resources() of 5 bundles cannot be met whole" in note
               for note in decision.notes), decision.notes


def test_an_infeasible_constraint_is_reported_as_such() -> None:
    decision = run(CPU, [], snapshot(constraints=[bundles({"GPU": 2})]))
    assert [(i.kind, i.demand) for i in decision.infeasible] == [
        (DemandKind.CONSTRAINT, "{'GPU': 2}")]
