"""The placer: Ray's utilization score, greedy fills, whole sets scored, leftovers re-scored."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onprem_ray_agent.model import LabelConstraint, LabelOperator, LabelSelector, Purpose
from onprem_ray_agent.packing import (
    STOPS_FROM,
    Placer,
    Request,
    SimNode,
    Template,
    _stops,
    _takes_some,
    fill,
    fits_count,
    shape_of,
    utilization_score,
)

WHY = (Purpose.PENDING, "x")


def _request(shape: dict, **kwargs) -> Request:
    return Request(shape_of(shape), WHY, **kwargs)


def _placer(*frees: dict, total: dict | None = None) -> tuple[Placer, list[SimNode]]:
    placer = Placer()
    nodes = []
    for i, free in enumerate(frees):
        node = SimNode(SimNode.ALIVE, "cpu", f"10.0.0.{i + 1}")
        placer.add(node, total or free, free)
        nodes.append(node)
    return placer, nodes


def _no_room(name: str, taken: int, taken_all: int) -> int:
    return 0


def _room(limit: int):
    return lambda name, taken, taken_all: limit - taken


@pytest.mark.parametrize(("free", "shape", "expected"), [
    ({"CPU": 4}, {"CPU": 1}, 4),
    ({"CPU": 4, "GPU": 1}, {"CPU": 1, "GPU": 1}, 1),
    ({"CPU": 0.3}, {"CPU": 0.1}, 3),
    ({"CPU": 4}, {"GPU": 1}, 0),
])
def test_fits_count(free, shape, expected) -> None:
    assert fits_count(free, shape_of(shape)) == expected


def test_score_prefers_the_fuller_bigger_node_then_avoids_gpu_nodes() -> None:
    task = _request({"CPU": 16})
    full_64 = utilization_score({"CPU": 64}, {"CPU": 0}, [task] * 4, {})
    full_16 = utilization_score({"CPU": 16}, {"CPU": 0}, [task], {})
    quarter_64 = utilization_score({"CPU": 64}, {"CPU": 48}, [task], {})
    assert full_64 > full_16 > quarter_64
    gpu_node = utilization_score({"CPU": 16, "GPU": 1}, {"CPU": 0, "GPU": 1}, [task], {})
    assert gpu_node < quarter_64  # no GPU node for work without GPUs comes before use


def test_score_ranks_label_selectors_by_preference() -> None:
    first = LabelSelector((LabelConstraint("zone", LabelOperator.IN, ("a",)),))
    fallback = LabelSelector((LabelConstraint("zone", LabelOperator.IN, ("b",)),))
    task = _request({"CPU": 1}, selectors=(first, fallback))
    assert (utilization_score({"CPU": 1}, {"CPU": 0}, [task], {"zone": "a"})
            > utilization_score({"CPU": 1}, {"CPU": 0}, [task], {"zone": "b"}))


def test_the_fullest_node_that_fits_is_chosen() -> None:
    placer, nodes = _placer({"CPU": 4}, {"CPU": 2}, total={"CPU": 4})
    attempt = placer.attempt([(_request({"CPU": 2}), 1)], [], _no_room)
    assert attempt.complete
    placer.apply(attempt, lambda name, count: [])
    assert [n.hosts_demand for n in nodes] == [False, True]


def test_a_whole_set_goes_to_the_type_it_fills_best() -> None:
    small = Template("gpu1", {"GPU": 1}, {}, 0)
    large = Template("gpu8", {"GPU": 8}, {}, 1)
    attempt = Placer().attempt([(_request({"GPU": 1}), 8)], [small, large], _room(8))
    assert attempt.new_counts() == {"gpu8": 1}


def test_the_leftover_is_scored_again() -> None:
    small = Template("cpu16", {"CPU": 16}, {}, 0)
    large = Template("cpu64", {"CPU": 64}, {}, 1)
    attempt = Placer().attempt([(_request({"CPU": 16}), 5)], [small, large], _room(8))
    assert attempt.new_counts() == {"cpu64": 1, "cpu16": 1}


def test_strict_spread_puts_one_bundle_per_node() -> None:
    placer, _ = _placer({"CPU": 8}, {"CPU": 8})
    spread = _request({"CPU": 1}, spread="pg:a")
    attempt = placer.attempt([(spread, 3)], [Template("cpu", {"CPU": 8}, {}, 0)], _room(5))
    assert attempt.complete
    assert attempt.new_counts() == {"cpu": 1}


def test_labels_select_the_type() -> None:
    wants_a = LabelSelector((LabelConstraint("zone", LabelOperator.IN, ("a",)),))
    a = Template("a", {"CPU": 4}, {"zone": "a"}, 1)
    b = Template("b", {"CPU": 4}, {"zone": "b"}, 0)
    attempt = Placer().attempt([(_request({"CPU": 4}, selectors=(wants_a,)), 2)], [b, a],
                               _room(5))
    assert attempt.new_counts() == {"a": 2}


def test_what_fits_nowhere_is_left() -> None:
    placer, _ = _placer({"CPU": 1})
    attempt = placer.attempt([(_request({"CPU": 2}), 2)], [], _no_room)
    assert not attempt.complete
    assert [count for _, count in attempt.leftover()] == [2]


FILL_SHAPES = [{"CPU": 1}, {"CPU": 0.5}, {"CPU": 4}, {"CPU": 8}, {"GPU": 1}, {"GPU": 0.5},
               {"CPU": 2, "GPU": 1}, {"CPU": 1, "memory": 8}, {"memory": 2}, {"CPU": 3}]


def test_a_fill_that_ends_early_takes_what_a_whole_fill_takes() -> None:
    """A fill through many requests ends once the node has room for none after the last it
    took (_stops): it takes the same, leaves the same free and scores the same as a fill
    through every request. Both a fill that ends early with requests left to try and one
    that does not come up (counted)."""
    seen: Counter = Counter()

    @given(free=st.dictionaries(st.sampled_from(["CPU", "GPU", "memory"]),
                                st.floats(0, 12, allow_nan=False), max_size=3),
           picks=st.lists(st.tuples(st.sampled_from(range(len(FILL_SHAPES))),
                                    st.integers(0, 3)),
                          min_size=STOPS_FROM, max_size=STOPS_FROM + 4))
    def check(free, picks) -> None:
        requests = [Request(shape_of(FILL_SHAPES[shape]), (Purpose.PENDING, str(i)))
                    for i, (shape, _) in enumerate(picks)]
        order = sorted(range(len(requests)), key=lambda i: requests[i].order(), reverse=True)
        requests = [requests[i] for i in order]
        remaining = [picks[i][1] for i in order]
        stops = _stops(requests)
        whole = fill(free, {"CPU": 16, "GPU": 2, "memory": 16}, {}, requests, remaining)
        early = fill(free, {"CPU": 16, "GPU": 2, "memory": 16}, {}, requests, remaining,
                     stops=stops)
        seen["examples"] += 1
        if whole is None:
            assert early is None
            return
        assert early is not None
        assert (early.counts, early.wanted, early.free, early.score) == (
            whole.counts, whole.wanted, whole.free, whole.score)
        last = early.counts[-1][0]
        if any(remaining[last + 1:]) and not _takes_some(early.free, stops[last + 1]):
            seen["ended early"] += 1
        else:
            seen["went through"] += 1

    check()
    print(f"\nfills: {dict(seen)}")
    assert seen["ended early"] and seen["went through"], seen
