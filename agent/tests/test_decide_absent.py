"""An active machine Ray does not list while the head is ALIVE (not DEAD, not ALIVE): waited
for, as after a restart of the head's Ray, whose new GCS the workers join again within
seconds; lost once absent for longer than provision_timeout_s, counted across decisions
through `Decision.absent_since` and only while the head is ALIVE."""

from __future__ import annotations

from decide_fixtures import (
    NOW,
    added,
    bundles,
    config,
    ip,
    machine,
    marked,
    node_type,
    snapshot,
    worker,
)

from onprem_ray_agent.model import ActionKind, Decision, Event, MachineState
from onprem_ray_agent.policy import decide
from onprem_ray_agent.transitions import apply

CPU = config(node_type("cpu", 3), provision_timeout_s=600)
ACTIVE = machine("cpu", 1, "active", since=NOW - 3600)
REASON = ("not in Ray's node list for 601 s since 1970-01-12 13:46:40 UTC (provision_timeout_s "
          "600): its Ray did not register again (after a restart of the head's Ray its node "
          "would have); lost")


def iterations(steps, record=ACTIVE, cfg=CPU, pending=()) -> list[Decision]:
    """One decision per (offset from NOW, Ray lists the machine, head ALIVE), each given the
    last one's absent_since, as the loop does; marks are applied to the record."""
    decisions: list[Decision] = []
    absent: dict[str, float] = {}
    for offset, listed, head in steps:
        nodes = [worker("cpu", 1)] if listed else []
        decision = decide(cfg, [record], snapshot(*nodes, pending=pending, head=head),
                          NOW + offset, absent_since=absent)
        for action in decision.of_kind(ActionKind.MARK):
            record = apply(record, action.event, NOW + offset, reason=action.reason,
                           backoff=cfg.backoff)
        absent = dict(decision.absent_since)
        decisions.append(decision)
    return decisions


def test_an_absent_machine_is_kept_within_provision_timeout_s() -> None:
    first, later = iterations([(0, False, True), (600, False, True)])
    assert marked(first) == marked(later) == {}
    assert first.absent_since == later.absent_since == {ip("cpu", 1): NOW}
    assert ("10.0.1.1 is active but not in Ray's node list yet: waiting for it to register "
            "(absent 600 s; lost after provision_timeout_s 600)" in later.notes)


def test_an_absent_machine_is_lost_after_provision_timeout_s_saying_why() -> None:
    *_, last = iterations([(0, False, True), (300, False, True), (601, False, True)])
    (action,) = last.of_kind(ActionKind.MARK)
    assert (action.event, action.ips, action.reason) == (Event.LOST, (ip("cpu", 1),), REASON)
    assert last.absent_since == {}


def test_the_lost_machine_has_failed_and_a_spare_serves_the_demand() -> None:
    *_, last = iterations([(0, False, True), (601, False, True)],
                          pending=[bundles({"CPU": 4}, 1)])
    assert marked(last) == {ip("cpu", 1): "lost"}
    assert added(last) == {"cpu": (ip("cpu", 2),)}


def test_a_lost_machine_that_registers_later_is_adopted() -> None:
    *_, last = iterations([(0, False, True), (601, False, True), (700, True, True)])
    (action,) = last.of_kind(ActionKind.MARK)
    assert (action.event, action.reason) == (
        Event.JOINED, "found ALIVE in Ray while recorded failed: adopted")


def test_a_machine_that_registers_again_in_time_is_never_lost() -> None:
    # Back after 500 s, absent again: the count starts over from its new absence.
    decisions = iterations([(0, False, True), (500, True, True), (510, False, True),
                            (1100, False, True), (1111, False, True)])
    assert [marked(d) for d in decisions[:4]] == [{}] * 4
    assert decisions[1].absent_since == {}
    assert decisions[3].absent_since == {ip("cpu", 1): NOW + 510}
    assert marked(decisions[4]) == {ip("cpu", 1): "lost"}


def test_absence_while_the_head_is_not_alive_never_counts() -> None:
    # The head not ALIVE (its GCS answers, the head's node is not registered yet): the count
    # starts over once it is.
    decisions = iterations([(0, False, True), (300, False, False), (400, False, True),
                            (1000, False, True), (1001, False, True)])
    assert decisions[1].absent_since == {}
    assert [marked(d) for d in decisions[:4]] == [{}] * 4
    assert decisions[3].absent_since == {ip("cpu", 1): NOW + 400}
    assert marked(decisions[4]) == {ip("cpu", 1): "lost"}


def test_only_active_machines_are_counted() -> None:
    for state in MachineState:
        if state != MachineState.ACTIVE:
            record = machine("cpu", 1, state.value, since=NOW)
            (decision,) = iterations([(0, False, True)], record=record)
            assert decision.absent_since == {}, state
