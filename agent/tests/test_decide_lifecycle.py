"""Observations and timeouts, backoff and quarantine, stable choice of machines, the head,
and edits of the inventory."""

from __future__ import annotations

import pytest
from decide_fixtures import (
    HEAD,
    NOW,
    added,
    bundles,
    busy,
    config,
    head_node,
    ip,
    machine,
    marked,
    node_type,
    ray_node,
    retired,
    run,
    snapshot,
    worker,
)

from onprem_ray_agent.model import ActionKind, DemandSnapshot, Machine, MachineState, NodeType

CPU = config(node_type("cpu", 3), provision_timeout_s=600, drain_deadline_s=300,
             quarantine_after_failures=3)
DEMAND = [bundles({"CPU": 4}, 1)]

# ------------------------------------------------------------------ observations and timeouts

MARKS = [
    pytest.param(machine("cpu", 1, "joining"), [worker("cpu", 1)], "joined",
                 id="joining-seen-alive-joins"),
    pytest.param(machine("cpu", 1, "joining", since=NOW - 601), [], "provision_timeout",
                 id="joining-too-long-times-out"),
    pytest.param(machine("cpu", 1, "joining", since=NOW - 600), [], None,
                 id="joining-exactly-the-timeout-waits"),
    pytest.param(machine("cpu", 1, "spare"), [worker("cpu", 1)], "joined",
                 id="spare-found-running-ray-is-adopted"),
    pytest.param(machine("cpu", 1, "failed", next_attempt_at=NOW + 99), [worker("cpu", 1)],
                 "joined", id="failed-found-running-ray-is-adopted"),
    pytest.param(machine("cpu", 1, "active"), [ray_node(ip("cpu", 1), alive=False)], "lost",
                 id="active-dead-in-ray-is-lost"),
    pytest.param(machine("cpu", 1, "active"), [], None,
                 id="active-absent-from-ray-waits-to-register"),
    pytest.param(machine("cpu", 1, "active"),
                 [ray_node(ip("cpu", 1), alive=False), worker("cpu", 1)], None,
                 id="an-old-dead-node-and-a-new-alive-one-is-alive"),
    pytest.param(machine("cpu", 1, "active"), [worker("cpu", 1, idle_s=5)], None,
                 id="active-alive-stays"),
    pytest.param(machine("cpu", 1, "failed", failures=1, next_attempt_at=NOW + 1), [], None,
                 id="failed-within-backoff-waits"),
    pytest.param(machine("cpu", 1, "failed", failures=1, next_attempt_at=NOW), [],
                 "backoff_elapsed", id="failed-after-backoff-is-spare-again"),
    pytest.param(machine("cpu", 1, "failed", failures=3, next_attempt_at=NOW), [],
                 "quarantine", id="failed-too-often-is-quarantined"),
    pytest.param(machine("cpu", 1, "draining", since=NOW - 301), [worker("cpu", 1)],
                 "drain_failed", id="drain-past-its-deadline-fails"),
    pytest.param(machine("cpu", 1, "draining", since=NOW - 100), [worker("cpu", 1)], None,
                 id="drain-within-its-deadline-waits"),
    pytest.param(machine("cpu", 1, "quarantined", failures=3), [], None,
                 id="quarantined-stays-quarantined"),
    pytest.param(machine("cpu", 1, "quarantined", failures=3), [worker("cpu", 1)], "joined",
                 id="quarantined-found-running-ray-is-adopted"),
]


@pytest.mark.parametrize(("record", "alive", "expected"), MARKS)
def test_observations_and_timeouts(record, alive, expected) -> None:
    decision = run(CPU, [record], snapshot(*alive))
    assert marked(decision).get(record.ip) == expected


def test_an_unregistered_worker_is_explained() -> None:
    decision = run(CPU, [machine("cpu", 1, "active")], snapshot())
    assert ("10.0.1.1 is active but not in Ray's node list yet: waiting for it to register "
            "(absent 0 s; lost after provision_timeout_s 600)" in decision.notes)


def test_a_lost_machine_is_not_declared_while_the_head_is_down() -> None:
    decision = run(CPU, [machine("cpu", 1, "active")],
                   snapshot(ray_node(ip("cpu", 1), alive=False), head=False))
    assert marked(decision) == {}
    assert any(f"the head {HEAD} is not ALIVE" in note for note in decision.notes)


def test_no_scaling_while_the_head_is_down() -> None:
    idle = [machine("cpu", 1, "active")]
    decision = run(config(node_type("cpu", 3, min_workers=3)), idle,
                   snapshot(worker("cpu", 1, idle_s=10_000), pending=DEMAND, head=False))
    assert added(decision) == {} and retired(decision) == {}


def test_a_quarantine_keeps_the_last_error_in_its_reason() -> None:
    record = machine("cpu", 1, "failed", failures=3, last_error="ssh: No route to host")
    (action,) = run(CPU, [record], snapshot()).of_kind(ActionKind.MARK)
    assert action.reason == "3 consecutive failures; last error: ssh: No route to host"


def test_provision_timeout_reason_says_how_long() -> None:
    record = machine("cpu", 1, "joining", since=NOW - 700)
    (action,) = run(CPU, [record], snapshot()).of_kind(ActionKind.MARK)
    assert action.reason == "not ALIVE in Ray 700 s after the add (provision_timeout_s 600)"


# ------------------------------------------------------------------ backoff and quarantine


def test_a_machine_in_backoff_is_skipped_for_another_spare() -> None:
    machines = [machine("cpu", 1, "failed", failures=1, next_attempt_at=NOW + 30,
                        success_count=9),
                machine("cpu", 2, "spare")]
    assert added(run(CPU, machines, snapshot(pending=DEMAND))) == {"cpu": (ip("cpu", 2),)}


def test_a_machine_whose_backoff_elapsed_can_be_added_at_once() -> None:
    machines = [machine("cpu", i, "failed", failures=1, next_attempt_at=NOW - 1)
                for i in (1, 2, 3)]
    decision = run(CPU, machines, snapshot(pending=DEMAND))
    assert added(decision) == {"cpu": (ip("cpu", 1),)}
    kinds = [a.kind for a in decision.actions]
    assert kinds.index(ActionKind.MARK) < kinds.index(ActionKind.ADD)


@pytest.mark.parametrize("state", ["quarantined", "failed"])
def test_quarantined_and_backing_off_machines_are_never_added(state) -> None:
    machines = [machine("cpu", i, state, failures=1, next_attempt_at=NOW + 60)
                for i in (1, 2, 3)]
    decision = run(config(node_type("cpu", 3, min_workers=3)), machines,
                   snapshot(pending=DEMAND))
    assert added(decision) == {}
    assert any("no further spare machine of type cpu" in note for note in decision.notes)


def test_the_waiting_note_says_when_the_next_retry_is() -> None:
    machines = [machine("cpu", i, "failed", failures=1, next_attempt_at=NOW + 25)
                for i in (1, 2, 3)]
    decision = run(CPU, machines, snapshot(pending=DEMAND))
    assert ("waiting: 1 pending {'CPU': 4} bundle: no further spare machine of type cpu "
            "(3 failed, next retry in 25 s)") in decision.notes


# ------------------------------------------------------------------ stable choice

ORDER = [
    pytest.param({}, ["10.0.1.2", "10.0.1.9", "10.0.1.10"], id="address-order-is-numeric"),
    pytest.param({"10.0.1.10": 2, "10.0.1.9": 1}, ["10.0.1.10", "10.0.1.9", "10.0.1.2"],
                 id="machines-that-succeeded-before-first"),
    pytest.param({"10.0.1.9": 1, "10.0.1.2": 1}, ["10.0.1.2", "10.0.1.9", "10.0.1.10"],
                 id="equal-successes-fall-back-to-address-order"),
]


@pytest.mark.parametrize(("successes", "expected"), ORDER)
def test_machines_are_chosen_in_a_stable_order(successes, expected) -> None:
    ips = ("10.0.1.10", "10.0.1.9", "10.0.1.2")
    cfg = config(NodeType("cpu", ips, {"CPU": 4}))
    machines = [Machine(ip=a, node_type="cpu", success_count=successes.get(a, 0)) for a in ips]
    for count in (1, 2, 3):
        decision = run(cfg, machines, snapshot(pending=[bundles({"CPU": 4}, count)]))
        assert added(decision)["cpu"] == tuple(expected[:count])


def test_the_same_input_gives_the_same_decision() -> None:
    machines = [machine("cpu", 1, "active"), machine("cpu", 2, "failed", next_attempt_at=NOW)]
    snap = snapshot(busy("cpu", 1), pending=[bundles({"CPU": 1}, 7)])
    assert run(CPU, machines, snap) == run(CPU, list(reversed(machines)), snap)


# ------------------------------------------------------------------ never the head


def test_the_head_listed_as_a_worker_is_ignored() -> None:
    cfg = config(NodeType("cpu", (HEAD, ip("cpu", 1)), {"CPU": 4}, min_workers=2))
    decision = run(cfg)
    assert added(decision) == {"cpu": (ip("cpu", 1),)}
    assert all(HEAD not in action.ips for action in decision.actions)
    assert any("is the head" in note for note in decision.notes)


def test_a_record_of_the_head_is_ignored() -> None:
    records = [Machine(ip=HEAD, node_type="cpu", state=MachineState.ACTIVE)]
    decision = run(CPU, records, snapshot(head_node(idle_s=10_000)))
    assert all(HEAD not in action.ips for action in decision.actions)


def test_an_idle_head_is_never_retired() -> None:
    decision = run(config(node_type("cpu", 2), idle_timeout_minutes=1), [],
                   DemandSnapshot(nodes=(head_node(idle_s=10_000),)))
    assert retired(decision) == {}


# ------------------------------------------------------------------ inventory edits

INVENTORY = [
    pytest.param([], "admit", "admitted", id="new-ip-becomes-spare"),
    pytest.param([machine("cpu", 9, "spare")], "forget", "removed_from_inventory",
                 id="removed-spare-is-forgotten"),
    pytest.param([machine("cpu", 9, "failed", next_attempt_at=NOW + 60)], "forget",
                 "removed_from_inventory", id="removed-failed-is-forgotten"),
    pytest.param([machine("cpu", 9, "quarantined")], "forget", "removed_from_inventory",
                 id="removed-quarantined-is-forgotten"),
    pytest.param([machine("cpu", 9, "active")], "retire", "drain_requested",
                 id="removed-active-is-drained-and-retired-first"),
    pytest.param([machine("cpu", 9, "joining")], None, None,
                 id="removed-joining-waits-for-the-add-to-finish"),
    pytest.param([machine("cpu", 9, "retiring")], None, None,
                 id="removed-retiring-waits"),
]


@pytest.mark.parametrize(("records", "kind", "event"), INVENTORY)
def test_inventory_edits(records, kind, event) -> None:
    target = ip("cpu", 9)
    cfg = config(node_type("cpu", 2), min_workers=0)
    if not records:  # a new IP in the inventory
        cfg = config(NodeType("cpu", (ip("cpu", 1), target), {"CPU": 4}))
    alive = [busy("cpu", 9)] if records and records[0].state.value in ("active",
                                                                         "retiring") else []
    decision = run(cfg, records, snapshot(*alive))
    actions = [a for a in decision.actions if target in a.ips]
    if kind is None:
        assert actions == []
        assert any(target in note and "waiting" in note for note in decision.notes)
    else:
        assert (actions[0].kind.value, actions[0].event.value) == (kind, event)


def test_a_removed_busy_worker_is_retired_even_below_min_workers() -> None:
    cfg = config(node_type("cpu", 1, min_workers=1))
    decision = run(cfg, [machine("cpu", 9, "active")], snapshot(busy("cpu", 9)))
    assert retired(decision) == {ip("cpu", 9): "drain_requested"}
    assert "removed from the inventory: drain and retire 10.0.1.9" in [
        a.reason for a in decision.actions]


def test_a_new_ip_already_running_ray_is_admitted_then_adopted() -> None:
    decision = run(config(node_type("cpu", 1)), [], snapshot(worker("cpu", 1)))
    assert [(a.kind.value, a.event.value) for a in decision.actions] == [
        ("admit", "admitted"), ("mark", "joined")]


def test_a_new_spare_can_be_added_in_the_same_iteration() -> None:
    decision = run(config(node_type("cpu", 1)), [], snapshot(pending=DEMAND))
    assert [a.kind.value for a in decision.actions] == ["admit", "add"]


def test_a_spare_whose_node_type_changed_is_forgotten_and_readmitted() -> None:
    cfg = config(NodeType("gpu", (ip("cpu", 1),), {"CPU": 8, "GPU": 1}))
    decision = run(cfg, [machine("cpu", 1, "spare")])
    assert [(a.kind.value, a.node_type) for a in decision.actions] == [
        ("forget", "cpu"), ("admit", "gpu")]


@pytest.mark.parametrize("state", ["quarantined", "failed"])
def test_a_new_node_type_does_not_wipe_a_quarantine_or_a_backoff(state) -> None:
    # The inventory now calls the machine gpu, and min_workers wants one gpu machine.
    cfg = config(NodeType("gpu", (ip("cpu", 1),), {"CPU": 8, "GPU": 1}, min_workers=1),
                 quarantine_after_failures=9)
    record = machine("cpu", 1, state, failures=3, next_attempt_at=NOW + 60)
    decision = run(cfg, [record], snapshot(pending=DEMAND))
    assert decision.actions == ()
    assert any(f"waiting while it is {state}" in note for note in decision.notes)


def test_an_active_machine_whose_node_type_changed_is_retired_first() -> None:
    cfg = config(NodeType("gpu", (ip("cpu", 1),), {"CPU": 8, "GPU": 1}))
    decision = run(cfg, [machine("cpu", 1, "active")], snapshot(busy("cpu", 1)))
    assert retired(decision) == {ip("cpu", 1): "drain_requested"}
    assert "node type changed from cpu to gpu" in decision.of_kind(ActionKind.RETIRE)[0].reason


def test_a_removed_joining_machine_that_joins_is_then_retired() -> None:
    decision = run(config(node_type("cpu", 2)), [machine("cpu", 9, "joining")],
                   snapshot(busy("cpu", 9)))
    assert marked(decision) == {ip("cpu", 9): "joined"}
    assert retired(decision) == {ip("cpu", 9): "drain_requested"}


def test_an_explicit_type_max_counts_a_leaving_machine_until_it_is_gone() -> None:
    cfg = config(node_type("cpu", 1, max_workers=1))
    decision = run(cfg, [machine("cpu", 9, "active")],
                   snapshot(worker("cpu", 9), pending=DEMAND))
    assert added(decision) == {}


def test_a_removed_machine_frees_no_capacity_for_planning() -> None:
    # The removed worker has room, but it is leaving: the demand needs a machine of its own.
    cfg = config(node_type("cpu", 1))
    decision = run(cfg, [machine("cpu", 9, "active")],
                   snapshot(worker("cpu", 9), pending=DEMAND))
    assert added(decision) == {"cpu": (ip("cpu", 1),)}
