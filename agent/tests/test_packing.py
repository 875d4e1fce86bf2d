"""The packer: counts of one shape onto groups of equal nodes, and gangs."""

from __future__ import annotations

import pytest

from onprem_ray_agent.packing import (
    Packer,
    SimNode,
    fits_count,
    merge_counts,
    ray_order,
    shape_of,
    utilization_score,
)

LABEL = ("pending", "x")


def _packer(*frees: dict, names=("CPU", "GPU")) -> tuple[Packer, list[SimNode]]:
    packer = Packer(names)
    nodes = []
    for i, free in enumerate(frees):
        node = SimNode(SimNode.ALIVE, "cpu", f"10.0.0.{i + 1}")
        packer.add(node, packer.vector(free))
        nodes.append(node)
    return packer, nodes


PLACE = [
    pytest.param([{"CPU": 4}] * 3, {"CPU": 1}, 10, 0, id="fills-equal-nodes"),
    pytest.param([{"CPU": 4}] * 3, {"CPU": 1}, 13, 1, id="reports-the-rest"),
    pytest.param([{"CPU": 4}] * 3, {"CPU": 3}, 4, 1, id="one-per-node-when-big"),
    pytest.param([{"CPU": 1}, {"CPU": 8}], {"CPU": 2}, 4, 0, id="skips-too-small-nodes"),
    pytest.param([{"CPU": 4, "GPU": 0}], {"GPU": 1}, 1, 1, id="missing-resource"),
    pytest.param([{"CPU": 0.3}] * 10, {"CPU": 0.1}, 30, 0, id="fractions"),
]


@pytest.mark.parametrize(("frees", "shape", "count", "left"), PLACE)
def test_place(frees, shape, count, left) -> None:
    packer, _ = _packer(*frees)
    assert packer.place(packer.needs(shape_of(shape)), count, LABEL) == left


def test_place_uses_nodes_in_order_and_marks_them() -> None:
    packer, nodes = _packer({"CPU": 4}, {"CPU": 4}, {"CPU": 4})
    packer.place(packer.needs(shape_of({"CPU": 1})), 5, LABEL)
    assert [n.hosts_demand for n in nodes] == [True, True, False]
    assert [packer.free_of(n)[0] for n in nodes] == [0.0, 3.0, 4.0]


def test_new_nodes_remember_what_they_are_for() -> None:
    packer = Packer(["CPU"])
    node = SimNode(SimNode.NEW, "cpu")
    packer.add(node, packer.vector({"CPU": 4}))
    packer.place(packer.needs(shape_of({"CPU": 1})), 3, LABEL)
    assert node.why == {LABEL: 3}


def test_equal_nodes_share_one_group() -> None:
    packer, _ = _packer(*[{"CPU": 4, "GPU": 1}] * 1000)
    assert len(packer._groups) == 1
    packer.place(packer.needs(shape_of({"CPU": 1})), 2001, LABEL)
    # 500 full, 1 with one bundle, 499 untouched
    assert sorted(len(g.members) for g in packer._groups if g.members) == [1, 499, 500]


@pytest.mark.parametrize(("distinct", "expected_unplaced"), [
    pytest.param(False, [], id="packed-onto-one-node"),
    pytest.param(True, [2], id="strict-spread-needs-a-node-each"),
])
def test_plan_gang(distinct, expected_unplaced) -> None:
    packer, nodes = _packer({"CPU": 4}, {"CPU": 4})
    needs = [packer.needs(shape_of({"CPU": 1}))] * 3
    touched, assigned, unplaced = packer.plan_gang(needs, distinct)
    assert unplaced == expected_unplaced
    assert packer.free_of(nodes[0]) == (4.0, 0.0)  # nothing changes before commit
    packer.commit(touched, LABEL, {})
    assert sum(4.0 - packer.free_of(n)[0] for n in nodes) == len(assigned)


def test_fits_count_treats_implicit_resources_as_one_per_node() -> None:
    shape = shape_of({"node:__internal_implicit_resource_a": 0.5})
    assert fits_count({}, shape) == 2


def test_merge_counts_sums_equal_shapes_and_drops_empty_ones() -> None:
    merged = merge_counts([({"CPU": 1}, 2), ({"CPU": 1.0}, 3), ({"CPU": 0}, 9), ({}, 1),
                           ({"CPU": 1}, 0)])
    assert merged == {(("CPU", 1.0),): 5}


def test_ray_order_puts_more_complex_then_heavier_shapes_first() -> None:
    shapes = [shape_of(s) for s in ({"CPU": 1}, {"CPU": 1, "GPU": 1}, {"CPU": 8})]
    assert sorted(shapes, key=ray_order, reverse=True) == [
        (("CPU", 1.0), ("GPU", 1.0)), (("CPU", 8.0),), (("CPU", 1.0),)]


def test_utilization_score_avoids_gpu_nodes_for_cpu_work() -> None:
    shape = shape_of({"CPU": 1})
    cpu = utilization_score({"CPU": 4}, shape, 4)
    gpu = utilization_score({"CPU": 4, "GPU": 1}, shape, 4)
    assert cpu > gpu
    assert gpu[0] is False
