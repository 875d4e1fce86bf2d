"""choose_min_workers: Ray's min_workers semantics as a table."""

from __future__ import annotations

import pytest
from ansible_collections.onprem.ray.plugins.plugin_utils.min_workers import (
    NodeTypeSlots,
    choose_min_workers,
)

CPU = ("10.0.1.1", "10.0.1.2", "10.0.1.3")
GPU = ("10.0.2.1", "10.0.2.2")


def cpu(low=0, high=3, **kwargs):
    return NodeTypeSlots("cpu", low, high, CPU, **kwargs)


def gpu(low=0, high=2, **kwargs):
    return NodeTypeSlots("gpu", low, high, GPU, gpu=True, **kwargs)


@pytest.mark.parametrize(("types", "low", "high", "expected"), [
    # a type's own min_workers first, its spare machines in the order given
    ([cpu(2), gpu(1)], 0, None, ["10.0.1.1", "10.0.1.2", "10.0.2.1"]),
    # the cluster's min_workers: GPU types last, even when listed first
    ([gpu(), cpu()], 2, None, ["10.0.1.1", "10.0.1.2"]),
    # ... and taken when nothing else is left
    ([gpu(), cpu()], 4, None, ["10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.2.1"]),
    # the type's min_workers counts toward the cluster's
    ([cpu(), gpu(1)], 2, None, ["10.0.2.1", "10.0.1.1"]),
    # a type's min above its max_workers: its max (Ray: min(min_workers, max_workers))
    ([cpu(3, 1)], 0, None, ["10.0.1.1"]),
    # the cluster's max_workers caps everything
    ([cpu(2), gpu(2)], 0, 3, ["10.0.1.1", "10.0.1.2", "10.0.2.1"]),
    # machines already working count, and are not started again
    ([NodeTypeSlots("cpu", 2, 3, CPU[1:], working=1)], 2, None, ["10.0.1.2"]),
    # nothing asked, nothing started
    ([cpu(), gpu()], 0, None, []),
])
def test_the_choice(types, low, high, expected):
    assert choose_min_workers(types, low, high).machines == expected


def test_a_shortfall_is_told_per_type_and_for_the_cluster():
    few = NodeTypeSlots("cpu", 3, 3, CPU[:1])
    choice = choose_min_workers([few], 5)
    assert choice.machines == ["10.0.1.1"]
    assert choice.node_type_shortfall == {"cpu": 2}
    assert choice.cluster_shortfall == 4  # 5 asked, 1 started


def test_occupied_slots_are_kept_from_max_workers():
    draining = NodeTypeSlots("cpu", 2, 2, CPU, working=0, occupied=1)
    choice = choose_min_workers([draining], 0)
    assert choice.machines == ["10.0.1.1"]
    assert choice.node_type_shortfall == {"cpu": 1}


def test_why_each_machine_starts():
    choice = choose_min_workers([cpu(1), gpu()], 2)
    assert choice.for_node_types == (("cpu", "10.0.1.1"),)
    assert choice.for_cluster == (("cpu", "10.0.1.2"),)
