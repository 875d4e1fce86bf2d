"""min_workers / max_workers per type and in all, upscaling_speed and the launch bound."""

from __future__ import annotations

import pytest
from decide_fixtures import (
    add_counts,
    added,
    bundles,
    busy,
    config,
    group,
    machine,
    node_type,
    run,
    snapshot,
    worker,
)

from onprem_ray_agent.model import Config


def _active(name: str, count: int):
    return ([machine(name, i, "active") for i in range(1, count + 1)],
            [busy(name, i) for i in range(1, count + 1)])


# ------------------------------------------------------------------ min / max

MIN_MAX = [
    pytest.param(config(node_type("cpu", 4, min_workers=2)), [], [], {"cpu": 2},
                 id="type-min-without-demand"),
    pytest.param(config(node_type("cpu", 4, min_workers=2)), [machine("cpu", 1, "joining")], [],
                 {"cpu": 1}, id="type-min-counts-joining"),
    pytest.param(config(node_type("cpu", 4, min_workers=2)),
                 [machine("cpu", 1, "draining")], [], {"cpu": 2},
                 id="type-min-does-not-count-draining"),
    pytest.param(config(node_type("cpu", 4, min_workers=3, max_workers=1)), [], [], {"cpu": 1},
                 id="type-min-above-max-means-max"),
    pytest.param(config(node_type("cpu", 4, max_workers=2)), [], [bundles({"CPU": 4}, 5)],
                 {"cpu": 2}, id="type-max-caps-demand"),
    pytest.param(config(node_type("cpu", 4, max_workers=2)),
                 [machine("cpu", 1, "retiring")], [bundles({"CPU": 4}, 5)],
                 {"cpu": 1}, id="type-max-counts-retiring-machines"),
    pytest.param(config(node_type("cpu", 4), node_type("gpu", 2), min_workers=2), [], [],
                 {"cpu": 2}, id="global-min-prefers-types-without-gpus"),
    pytest.param(config(node_type("cpu", 1), node_type("big", 2), min_workers=2), [], [],
                 {"cpu": 1, "big": 1}, id="global-min-spills-to-the-next-type"),
    pytest.param(config(node_type("cpu", 4, min_workers=1), min_workers=2), [], [],
                 {"cpu": 2}, id="global-min-on-top-of-type-min"),
    # Ray's score prefers the machine that matches more resource kinds: two gpu machines
    # (8 CPUs, 1 GPU) hold all five bundles, within max_workers 3.
    pytest.param(config(node_type("cpu", 4), node_type("gpu", 2), max_workers=3), [],
                 [bundles({"CPU": 4}, 3), bundles({"GPU": 1}, 2)], {"gpu": 2},
                 id="global-max-whole-demand-scored-together"),
    pytest.param(config(node_type("cpu", 4), node_type("gpu", 2), max_workers=3), [],
                 [bundles({"CPU": 4}, 3)], {"cpu": 3},
                 id="global-max-cpu-work-avoids-gpu-machines"),
    pytest.param(config(node_type("cpu", 4), max_workers=0), [], [bundles({"CPU": 1})], {},
                 id="global-max-zero-adds-nothing"),
]


@pytest.mark.parametrize(("cfg", "machines", "pending", "expected"), MIN_MAX)
def test_min_and_max_workers(cfg, machines, pending, expected) -> None:
    assert add_counts(run(cfg, machines, snapshot(pending=pending))) == expected


def test_the_min_reason_names_the_rule() -> None:
    decision = run(config(node_type("cpu", 4, min_workers=1)))
    assert decision.actions[-1].reason == "type cpu is below min_workers 1: add 10.0.1.1"


def test_demand_waiting_on_a_limit_is_explained() -> None:
    decision = run(config(node_type("cpu", 4, max_workers=1)), [],
                   snapshot(pending=[bundles({"CPU": 4}, 3)]))
    assert added(decision) == {"cpu": ("10.0.1.1",)}
    assert ("waiting: 2 pending {'CPU': 4} bundles: type cpu is at max_workers 1"
            in decision.notes)


def test_demand_waiting_on_the_global_limit_is_explained() -> None:
    decision = run(config(node_type("cpu", 4), node_type("gpu", 4), max_workers=3), [],
                   snapshot(pending=[bundles({"CPU": 4}, 3), bundles({"GPU": 1}, 4)]))
    assert add_counts(decision) == {"gpu": 3}
    assert "waiting: 1 pending {'GPU': 1} bundle: max_workers 3 reached" in decision.notes


# ------------------------------------------------------------------ upscaling_speed

def _speed_case(speed: float, running: int, joining: int = 0, demand: int = 20,
                head_type: str | None = None, pool: int = 30) -> tuple[Config, list, list]:
    cfg = config(node_type("cpu", pool), upscaling_speed=speed, head_node_type=head_type)
    machines, alive = _active("cpu", running)
    machines += [machine("cpu", running + i, "joining", since=999_990.0)
                 for i in range(1, joining + 1)]
    return cfg, machines, [*alive], demand


UPSCALING = [
    # Ray v2 Reconciler._compute_to_launch: max(1, ceil(speed * max(running, 1)))
    pytest.param(1.0, 0, 0, None, 1, id="speed-1-nothing-running-launches-1"),
    pytest.param(1.0, 2, 0, None, 2, id="speed-1-two-running-launches-2"),
    pytest.param(0.5, 3, 0, None, 2, id="speed-half-three-running-rounds-up-to-2"),
    pytest.param(2.0, 3, 0, None, 6, id="speed-2-three-running-launches-6"),
    pytest.param(0.0, 10, 0, None, 1, id="speed-0-still-launches-1"),
    # ... less those already joining (v1 _get_concurrent_resource_demand_to_launch)
    pytest.param(1.0, 2, 1, None, 1, id="joining-machines-use-up-the-allowance"),
    pytest.param(1.0, 2, 2, None, 0, id="allowance-used-up-launches-nothing"),
    # The head is a running node of its own type in Ray.
    pytest.param(1.0, 1, 0, "cpu", 2, id="the-head-counts-as-running-of-its-type"),
    pytest.param(1.0, 1, 0, "other", 1, id="a-head-of-another-type-does-not-count"),
]


@pytest.mark.parametrize(("speed", "running", "joining", "head_type", "expected"), UPSCALING)
def test_upscaling_speed_follows_ray(speed, running, joining, head_type, expected) -> None:
    cfg, machines, alive, demand = _speed_case(speed, running, joining, head_type=head_type)
    decision = run(cfg, machines, snapshot(*alive, pending=[bundles({"CPU": 4}, demand)]))
    assert sum(add_counts(decision).values()) == expected


def test_held_back_launches_are_explained() -> None:
    cfg, machines, alive, _ = _speed_case(1.0, 2, 1)
    decision = run(cfg, machines, snapshot(*alive, pending=[bundles({"CPU": 4}, 5)]))
    assert any("holding 3 of 4 planned adds of type cpu: upscaling_speed 1 with 2 running "
               "allows 2 pending, 1 already joining" in note for note in decision.notes)


URGENT = [
    pytest.param(config(node_type("cpu", 9, min_workers=3), upscaling_speed=1.0), snapshot(),
                 3, id="min-workers-are-not-held-back"),
    pytest.param(config(node_type("cpu", 9), upscaling_speed=1.0),
                 snapshot(constraints=[bundles({"CPU": 4}, 3)]), 3,
                 id="request-resources-is-not-held-back"),
    pytest.param(config(node_type("cpu", 9), upscaling_speed=1.0),
                 snapshot(groups=[group("pg", "STRICT_SPREAD", *[{"CPU": 1}] * 3)]), 3,
                 id="placement-groups-are-not-held-back"),
    pytest.param(config(node_type("cpu", 9, min_workers=2), upscaling_speed=1.0),
                 snapshot(pending=[bundles({"CPU": 4}, 5)]), 2,
                 id="tasks-beyond-the-urgent-machines-wait"),
]


@pytest.mark.parametrize(("cfg", "snap", "expected"), URGENT)
def test_urgent_launches_bypass_upscaling_speed(cfg, snap, expected) -> None:
    # Ray v1: min_workers, request_resources() and placement groups "override the launch
    # concurrency limits" (_get_concurrent_resource_demand_to_launch).
    assert sum(add_counts(run(cfg, [], snap)).values()) == expected


CONCURRENCY = [
    pytest.param(3, 0, 3, id="bound-3"),
    pytest.param(3, 2, 1, id="joining-machines-count"),
    pytest.param(3, 3, 0, id="bound-reached"),
    pytest.param(0, 0, 0, id="zero-pauses-launches"),
]


@pytest.mark.parametrize(("bound", "joining", "expected"), CONCURRENCY)
def test_max_concurrent_launches_bounds_all_types(bound, joining, expected) -> None:
    cfg = config(node_type("cpu", 6, min_workers=6), node_type("gpu", 2, min_workers=2),
                 max_concurrent_launches=bound)
    machines = [machine("cpu", i, "joining", since=999_990.0) for i in range(1, joining + 1)]
    decision = run(cfg, machines, snapshot())
    assert sum(add_counts(decision).values()) == expected
    if expected < 8 - joining:
        assert any(f"max_concurrent_launches {bound} reached" in n for n in decision.notes)


def test_the_bound_serves_types_in_configuration_order() -> None:
    cfg = config(node_type("gpu", 2, min_workers=2), node_type("cpu", 4, min_workers=2),
                 max_concurrent_launches=3)
    assert add_counts(run(cfg)) == {"gpu": 2, "cpu": 1}


def test_a_worker_with_free_room_absorbs_demand_before_any_launch() -> None:
    cfg = config(node_type("cpu", 4), upscaling_speed=1.0)
    decision = run(cfg, [machine("cpu", 1, "active")],
                   snapshot(worker("cpu", 1), pending=[bundles({"CPU": 1}, 4)]))
    assert added(decision) == {}
