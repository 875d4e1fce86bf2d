"""Scale down as Ray autoscaler v2 does (_enforce_idle_termination,
_enforce_max_workers_per_type / _global): idle strictly longer than the timeout, not needed by
demand or request_resources(), never below min_workers, longest idle first."""

from __future__ import annotations

import pytest
from decide_fixtures import (
    NOW,
    bundles,
    busy,
    config,
    ip,
    machine,
    node_type,
    retired,
    run,
    snapshot,
    worker,
)

from onprem_ray_agent.model import ActionKind

TIMEOUT_S = 300.0  # idle_timeout_minutes 5


def _cfg(**type_kwargs):
    return config(node_type("cpu", 4, **type_kwargs), idle_timeout_minutes=5)


def _active(*indexes):
    # Active for longer than any idle time below: Ray's idle duration decides.
    return [machine("cpu", i, "active", since=NOW - 100_000) for i in indexes]


IDLE = [
    pytest.param(_cfg(), _active(1), [worker("cpu", 1, idle_s=TIMEOUT_S + 1)], {},
                 {"10.0.1.1": "idle_expired"}, id="idle-past-the-timeout-retires"),
    pytest.param(_cfg(), _active(1), [worker("cpu", 1, idle_s=TIMEOUT_S)], {}, {},
                 id="idle-exactly-the-timeout-stays"),
    pytest.param(_cfg(), _active(1), [worker("cpu", 1, idle_s=10)], {}, {},
                 id="recently-busy-stays"),
    pytest.param(_cfg(), _active(1), [worker("cpu", 1, idle_s=9999)],
                 {"pending": [bundles({"CPU": 1})]}, {},
                 id="idle-but-pending-work-fits-on-it-stays"),
    pytest.param(_cfg(), _active(1), [worker("cpu", 1, idle_s=9999)],
                 {"constraints": [bundles({"CPU": 4})]}, {},
                 id="idle-but-request-resources-needs-it-stays"),
    pytest.param(_cfg(), _active(1, 2),
                 [worker("cpu", 1, idle_s=9999), worker("cpu", 2, idle_s=9999)],
                 {"constraints": [bundles({"CPU": 4})]}, {"10.0.1.2": "idle_expired"},
                 id="only-what-request-resources-needs-stays"),
    pytest.param(_cfg(min_workers=1), _active(1, 2),
                 [worker("cpu", 1, idle_s=900), worker("cpu", 2, idle_s=400)], {},
                 {"10.0.1.1": "idle_expired"},
                 id="type-min-keeps-the-least-idle"),
    pytest.param(_cfg(min_workers=2), _active(1, 2),
                 [worker("cpu", 1, idle_s=900), worker("cpu", 2, idle_s=400)], {}, {},
                 id="type-min-keeps-all"),
    pytest.param(config(node_type("cpu", 4), idle_timeout_minutes=5, min_workers=1),
                 _active(1, 2), [worker("cpu", 1, idle_s=400), worker("cpu", 2, idle_s=900)],
                 {}, {"10.0.1.2": "idle_expired"}, id="global-min-keeps-the-least-idle"),
    pytest.param(_cfg(), _active(1, 2),
                 [worker("cpu", 1, idle_s=900), busy("cpu", 2)], {},
                 {"10.0.1.1": "idle_expired"}, id="busy-workers-stay"),
    pytest.param(_cfg(), [machine("cpu", 1, "joining")], [], {}, {},
                 id="joining-machines-are-not-idle"),
    pytest.param(config(node_type("cpu", 4), idle_timeout_minutes=0), _active(1),
                 [worker("cpu", 1, idle_s=0.5)], {}, {"10.0.1.1": "idle_expired"},
                 id="timeout-zero-retires-any-idle-node"),
]


@pytest.mark.parametrize(("cfg", "machines", "alive", "demand", "expected"), IDLE)
def test_idle_termination(cfg, machines, alive, demand, expected) -> None:
    assert retired(run(cfg, machines, snapshot(*alive, **demand))) == expected


def test_the_reason_names_the_timeout_and_the_idle_times() -> None:
    decision = run(_cfg(), _active(1, 2),
                   snapshot(worker("cpu", 1, idle_s=400), worker("cpu", 2, idle_s=900)))
    (action,) = decision.of_kind(ActionKind.RETIRE)
    assert action.ips == (ip("cpu", 2), ip("cpu", 1))  # longest idle first
    assert action.reason == ("idle longer than idle_timeout_minutes 5 (10.0.1.2 900 s, "
                             "10.0.1.1 400 s): retire 10.0.1.2, 10.0.1.1")
    assert action.request_id.startswith("retire-cpu-")


@pytest.mark.parametrize(("idle_s", "expected"), [
    (60.0, {}),  # exactly the type's timeout: not yet
    (120.0, {"10.0.1.1": "idle_expired"}),  # past cpu's 60 s, within the cluster's 300 s
    (TIMEOUT_S + 1, {"10.0.1.1": "idle_expired", "10.0.2.1": "idle_expired"}),
])
def test_a_types_own_idle_timeout_retires_its_nodes_alone(idle_s, expected) -> None:
    """Ray's per-type idle_timeout_s: cpu's 60 s, gpu's the cluster's idle_timeout_minutes;
    one node of each, idle as long as each other."""
    cfg = config(node_type("cpu", 2, idle_timeout_s=60.0), node_type("gpu", 2),
                 idle_timeout_minutes=5)
    machines = [machine("cpu", 1, "active", since=NOW - 100_000),
                machine("gpu", 1, "active", since=NOW - 100_000)]
    decision = run(cfg, machines, snapshot(worker("cpu", 1, idle_s=idle_s),
                                           worker("gpu", 1, idle_s=idle_s)))
    assert retired(decision) == expected
    reasons = {a.node_type: a.reason for a in decision.of_kind(ActionKind.RETIRE)}
    if "10.0.1.1" in expected:
        assert reasons["cpu"].startswith("idle longer than idle_timeout_s 60 of type cpu (")
    if "10.0.2.1" in expected:
        assert reasons["gpu"].startswith("idle longer than idle_timeout_minutes 5 (")


def test_a_kept_idle_node_is_explained() -> None:
    decision = run(_cfg(min_workers=1), _active(1), snapshot(worker("cpu", 1, idle_s=900)))
    assert "10.0.1.1 idle 900 s: kept, as type cpu is at min_workers 1" in decision.notes


def test_many_kept_machines_make_one_short_note() -> None:
    cfg = config(node_type("cpu", 30, min_workers=30), idle_timeout_minutes=5)
    machines = _active(*range(1, 31))
    decision = run(cfg, machines, snapshot(*[worker("cpu", i, idle_s=900) for i in
                                            range(1, 31)]))
    (note,) = decision.notes
    assert note.endswith("and 20 more: kept, as type cpu is at min_workers 30")


MAX = [
    pytest.param(config(node_type("cpu", 4, max_workers=1)), _active(1, 2),
                 [worker("cpu", 1, idle_s=5), busy("cpu", 2)], {"10.0.1.1": "drain_requested"},
                 id="type-max-lowered-retires-the-longest-idle"),
    pytest.param(config(node_type("cpu", 4, max_workers=1)), _active(1, 2),
                 [busy("cpu", 1), busy("cpu", 2)], {"10.0.1.1": "drain_requested"},
                 id="type-max-lowered-retires-even-busy-nodes-as-ray-does"),
    pytest.param(config(node_type("cpu", 4), max_workers=1), _active(1, 2, 3),
                 [busy("cpu", 1), worker("cpu", 2, idle_s=50), worker("cpu", 3, idle_s=70)],
                 {"10.0.1.3": "drain_requested", "10.0.1.2": "drain_requested"},
                 id="global-max-lowered-retires-in-termination-order"),
    pytest.param(config(node_type("cpu", 4, max_workers=2)), _active(1, 2),
                 [busy("cpu", 1), busy("cpu", 2)], {}, id="at-max-nothing-to-do"),
]


@pytest.mark.parametrize(("cfg", "machines", "alive", "expected"), MAX)
def test_max_workers_lowered(cfg, machines, alive, expected) -> None:
    assert retired(run(cfg, machines, snapshot(*alive))) == expected


def test_max_and_idle_together_never_retire_twice() -> None:
    cfg = config(node_type("cpu", 4, max_workers=1), idle_timeout_minutes=1)
    decision = run(cfg, _active(1, 2),
                   snapshot(worker("cpu", 1, idle_s=900), worker("cpu", 2, idle_s=800)))
    assert retired(decision) == {"10.0.1.1": "drain_requested", "10.0.1.2": "idle_expired"}
    ips = [a for action in decision.actions for a in action.ips]
    assert len(ips) == len(set(ips))
