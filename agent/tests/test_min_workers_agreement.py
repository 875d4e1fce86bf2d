"""`up` and the agent start the same workers for min_workers: the collection's
`choose_min_workers` (which `up` calls through the filter onprem.ray.min_workers_to_start)
against the agent's decision, on generated pools with no demand and every machine spare."""

from __future__ import annotations

from collections import Counter

from ansible_collections.onprem.ray.plugins.plugin_utils.min_workers import (
    NodeTypeSlots,
    choose_min_workers,
)
from decide_fixtures import RESOURCES, added, config, every_machine, node_type, run
from hypothesis import given, settings
from hypothesis import strategies as st

SEEN: Counter = Counter()


@st.composite
def pools(draw):
    names = draw(st.lists(st.sampled_from(sorted(RESOURCES)), min_size=1, max_size=3,
                          unique=True))
    types = []
    for name in names:
        count = draw(st.integers(0, 4))
        high = draw(st.one_of(st.none(), st.integers(0, count)))
        low = draw(st.integers(0, count if high is None else high))
        types.append(node_type(name, count, min_workers=low, max_workers=high))
    pool = sum(len(t.ips) for t in types)
    floor = sum(t.min_workers for t in types)
    high = draw(st.one_of(st.none(), st.integers(floor, pool)))
    low = draw(st.integers(0, pool if high is None else high))
    return config(*types, min_workers=low, max_workers=high)


@settings(max_examples=300, deadline=None)
@given(pools())
def test_up_and_the_agent_choose_the_same_workers_for_min_workers(cfg):
    slots = [NodeTypeSlots(t.name, t.min_workers, t.effective_max, t.ips,
                           gpu=bool(t.resources.get("GPU")))
             for t in cfg.node_types]
    chosen = choose_min_workers(slots, cfg.min_workers, cfg.max_workers)
    by_type: dict[str, set[str]] = {}
    for name, machine in chosen.for_node_types + chosen.for_cluster:
        by_type.setdefault(name, set()).add(machine)
    agent = {name: set(ips) for name, ips in added(run(cfg, every_machine(cfg))).items()}
    assert agent == by_type
    SEEN["for a node type"] += bool(chosen.for_node_types)
    SEEN["for the cluster"] += bool(chosen.for_cluster)
    SEEN["a GPU type passed over"] += any(
        s.gpu and len(s.spare) > len(by_type.get(s.name, ())) for s in slots) and bool(
        chosen.for_cluster)
    SEEN["nothing"] += not chosen.machines


def test_the_generated_pools_reach_every_case():
    test_up_and_the_agent_choose_the_same_workers_for_min_workers()
    assert all(SEEN[case] >= 10 for case in (
        "for a node type", "for the cluster", "a GPU type passed over", "nothing")), SEEN
