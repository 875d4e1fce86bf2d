"""Cancelling joins nobody needs any more: the decision (table-driven), and what follows."""

from __future__ import annotations

import pytest
from decide_fixtures import NOW, bundles, busy, config, ip, machine, node_type, snapshot, worker

from onprem_ray_agent.model import ActionKind, Decision, Event
from onprem_ray_agent.policy import decide

RUN_A, RUN_B = "add-cpu-1-aaaaaaaa", "add-cpu-2-bbbbbbbb"
GRACE = 30.0
LONG_AGO = NOW - GRACE - 1  # unneeded for longer than the grace
LATELY = NOW - GRACE + 1  # unneeded, within the grace


def joining(i: int, run_id: str = RUN_A, since: float = NOW - 120, name: str = "cpu"):
    return machine(name, i, "joining", request_id=run_id, since=since)


def cancels(decision: Decision) -> dict[str, tuple[str, ...]]:
    """Run id -> the IPs of its cancel action."""
    return {a.request_id: a.ips for a in decision.of_kind(ActionKind.CANCEL)}


CPU = config(node_type("cpu", 4), cancel_join_after_s=GRACE)

CASES = [
    # (config, machines, Ray's nodes, pending demand, unneeded since, expected cancels)
    pytest.param(CPU, [joining(1), joining(2)], [], [], {RUN_A: LONG_AGO},
                 {RUN_A: (ip("cpu", 1), ip("cpu", 2))}, id="demand-gone-past-the-grace"),
    pytest.param(CPU, [joining(1)], [], [], {RUN_A: NOW - GRACE},
                 {RUN_A: (ip("cpu", 1),)}, id="demand-gone-exactly-the-grace"),
    pytest.param(CPU, [joining(1)], [], [], {RUN_A: LATELY}, {},
                 id="demand-gone-within-the-grace"),
    pytest.param(CPU, [joining(1)], [], [], {}, {}, id="demand-gone-first-seen-now"),
    pytest.param(CPU, [joining(1), joining(2)], [], [bundles({"CPU": 4})],
                 {RUN_A: LONG_AGO}, {}, id="a-run-with-one-still-needed-host"),
    pytest.param(CPU, [joining(1)], [], [bundles({"CPU": 4})], {RUN_A: LONG_AGO}, {},
                 id="demand-returns"),
    pytest.param(CPU, [joining(1)], [worker("cpu", 3)], [bundles({"CPU": 4})],
                 {RUN_A: LONG_AGO}, {RUN_A: (ip("cpu", 1),)},
                 id="demand-fits-on-a-node-alive-since"),
    pytest.param(CPU, [joining(1)], [busy("cpu", 3)], [bundles({"CPU": 4})],
                 {RUN_A: LONG_AGO}, {}, id="demand-needs-it-the-alive-node-is-busy"),
    pytest.param(config(node_type("cpu", 4, min_workers=1), cancel_join_after_s=GRACE),
                 [joining(1)], [], [], {RUN_A: LONG_AGO}, {},
                 id="its-type-below-min-workers"),
    pytest.param(config(node_type("cpu", 4), min_workers=1, cancel_join_after_s=GRACE),
                 [joining(1)], [], [], {RUN_A: LONG_AGO}, {},
                 id="the-cluster-below-min-workers"),
    pytest.param(config(node_type("cpu", 4, min_workers=1), cancel_join_after_s=GRACE),
                 [joining(1), machine("cpu", 3, "active")], [worker("cpu", 3)], [],
                 {RUN_A: LONG_AGO}, {RUN_A: (ip("cpu", 1),)},
                 id="min-workers-met-by-active-machines"),
    pytest.param(CPU, [joining(1), joining(2, RUN_B, since=NOW - 60)], [],
                 [bundles({"CPU": 4})], {RUN_A: LONG_AGO, RUN_B: LONG_AGO},
                 {RUN_B: (ip("cpu", 2),)}, id="the-oldest-join-is-kept-the-newer-canceled"),
    pytest.param(config(node_type("cpu", 4, max_workers=1), cancel_join_after_s=GRACE),
                 [joining(1), machine("cpu", 3, "active")], [busy("cpu", 3)],
                 [bundles({"CPU": 4})], {RUN_A: LONG_AGO}, {RUN_A: (ip("cpu", 1),)},
                 id="above-max-workers-it-is-not-needed"),
    pytest.param(CPU, [joining(1), machine("cpu", 2, "joining", request_id=RUN_A)],
                 [worker("cpu", 2)], [], {RUN_A: LONG_AGO}, {},
                 id="a-host-of-the-run-joined-meanwhile"),
    pytest.param(config(node_type("cpu", 4, resources={}), cancel_join_after_s=GRACE),
                 [joining(1)], [], [], {RUN_A: LONG_AGO}, {},
                 id="its-type-resources-not-known-yet"),
]


@pytest.mark.parametrize(("cfg", "machines", "nodes", "pending", "unneeded", "expected"),
                         CASES)
def test_cancel_decision(cfg, machines, nodes, pending, unneeded, expected) -> None:
    decision = decide(cfg, machines, snapshot(*nodes, pending=pending), NOW,
                      unneeded_since=unneeded)
    assert cancels(decision) == expected
    for action in decision.of_kind(ActionKind.CANCEL):
        assert action.event == Event.JOIN_CANCELED
        since = unneeded[action.request_id]
        assert f"for {NOW - since:.0f} s, since {since:.0f}" in action.reason
        assert f"cancel_join_after_s {GRACE:g}" in action.reason
    # The decision never both adds and cancels machines of one type.
    assert not ({a.node_type for a in decision.of_kind(ActionKind.ADD)}
                & {a.node_type for a in decision.of_kind(ActionKind.CANCEL)})


def test_the_grace_is_counted_from_when_the_demand_went() -> None:
    """First seen unneeded: recorded at now, noted, not canceled; the next decisions keep
    that time until the grace has passed; demand coming back forgets it."""
    machines = [joining(1)]
    first = decide(CPU, machines, snapshot(), NOW)
    assert first.unneeded_since == {RUN_A: NOW}
    assert cancels(first) == {}
    assert any("canceled after cancel_join_after_s 30 unless demand returns" in note
               and RUN_A in note for note in first.notes)
    within = decide(CPU, machines, snapshot(), NOW + GRACE - 1,
                    unneeded_since=first.unneeded_since)
    assert (cancels(within), within.unneeded_since) == ({}, {RUN_A: NOW})
    past = decide(CPU, machines, snapshot(), NOW + GRACE, unneeded_since=within.unneeded_since)
    assert cancels(past) == {RUN_A: (ip("cpu", 1),)}
    back = decide(CPU, machines, snapshot(pending=[bundles({"CPU": 4})]), NOW + GRACE,
                  unneeded_since=within.unneeded_since)
    assert (cancels(back), back.unneeded_since) == ({}, {})


def test_only_runs_still_running_are_canceled() -> None:
    """A joining machine whose add run ended (it waits to be ALIVE) has no run to cancel."""
    machines = [joining(1), joining(2, RUN_B)]
    decision = decide(CPU, machines, snapshot(), NOW, running_adds={RUN_B},
                      unneeded_since={RUN_A: LONG_AGO, RUN_B: LONG_AGO})
    assert cancels(decision) == {RUN_B: (ip("cpu", 2),)}
    assert set(decision.unneeded_since) == {RUN_B}


def test_no_cancel_while_the_head_is_not_alive() -> None:
    decision = decide(CPU, [joining(1)], snapshot(head=False), NOW,
                      unneeded_since={RUN_A: LONG_AGO})
    assert (cancels(decision), decision.unneeded_since) == ({}, {})


def test_a_canceled_machine_is_retired_so_nothing_it_started_keeps_running() -> None:
    canceled = machine("cpu", 1, "canceled", request_id=RUN_A, failures=1,
                       next_attempt_at=NOW + 99)
    decision = decide(CPU, [canceled], snapshot(), NOW)
    (retire,) = decision.of_kind(ActionKind.RETIRE)
    assert (retire.ips, retire.event) == ((ip("cpu", 1),), Event.DRAIN_REQUESTED)
    assert "its add was canceled" in retire.reason
    assert decision.of_kind(ActionKind.ADD) == ()
    waiting = decide(CPU, [canceled], snapshot(head=False), NOW)
    assert waiting.of_kind(ActionKind.RETIRE) == ()


@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan")])
def test_cancel_join_after_s_must_be_positive_and_finite(value) -> None:
    with pytest.raises(ValueError, match="cancel_join_after_s must be a finite number > 0"):
        config(node_type("cpu"), cancel_join_after_s=value)
