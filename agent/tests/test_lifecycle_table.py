"""The machine lifecycle table: every legal transition, and every other pair raises."""

from __future__ import annotations

import itertools

import pytest

from onprem_ray_agent import transitions
from onprem_ray_agent.model import Backoff, Event, Machine, MachineState
from onprem_ray_agent.transitions import TRANSITIONS, IllegalTransition, legal_events

S, E = MachineState, Event
NOW = 5000.0

LEGAL = [
    (S.SPARE, E.ADD_REQUESTED, S.JOINING),
    (S.JOINING, E.JOINED, S.ACTIVE),
    (S.SPARE, E.JOINED, S.ACTIVE),
    (S.FAILED, E.JOINED, S.ACTIVE),
    (S.QUARANTINED, E.JOINED, S.ACTIVE),
    (S.JOINING, E.ADD_FAILED, S.FAILED),
    (S.JOINING, E.UNREACHABLE, S.FAILED),
    (S.JOINING, E.PROVISION_TIMEOUT, S.FAILED),
    (S.JOINING, E.JOIN_CANCELED, S.CANCELED),
    (S.CANCELED, E.DRAIN_REQUESTED, S.DRAINING),
    (S.SPARE, E.CLAIMED, S.JOINING),
    (S.FAILED, E.CLAIMED, S.JOINING),
    (S.CANCELED, E.CLAIMED, S.JOINING),
    (S.JOINING, E.CLAIMED, S.JOINING),
    (S.JOINING, E.CLAIM_EXPIRED, S.SPARE),
    (S.JOINING, E.CLAIM_RELEASED, S.SPARE),
    (S.ACTIVE, E.LOST, S.FAILED),
    (S.ACTIVE, E.IDLE_EXPIRED, S.DRAINING),
    (S.ACTIVE, E.DRAIN_REQUESTED, S.DRAINING),
    (S.DRAINING, E.DRAINED, S.RETIRING),
    (S.DRAINING, E.DRAIN_FAILED, S.ACTIVE),
    (S.RETIRING, E.RETIRED, S.SPARE),
    (S.RETIRING, E.RETIRE_FAILED, S.FAILED),
    (S.RETIRING, E.UNREACHABLE, S.FAILED),
    (S.FAILED, E.BACKOFF_ELAPSED, S.SPARE),
    (S.FAILED, E.QUARANTINE, S.QUARANTINED),
    (S.QUARANTINED, E.RELEASED, S.SPARE),
    (S.SPARE, E.REMOVED_FROM_INVENTORY, None),
    (S.FAILED, E.REMOVED_FROM_INVENTORY, None),
    (S.QUARANTINED, E.REMOVED_FROM_INVENTORY, None),
]


def machine(state: MachineState, **kwargs) -> Machine:
    return Machine(ip="10.0.1.1", node_type="cpu", state=state, since=100.0, **kwargs)


def test_the_table_is_exactly_the_documented_one() -> None:
    documented = {(source, event): to for source, event, to in LEGAL}
    documented[(None, E.ADMITTED)] = S.SPARE
    assert documented == TRANSITIONS


@pytest.mark.parametrize(("source", "event", "expected"), LEGAL,
                         ids=[f"{s.value}-{e.value}" for s, e, _ in LEGAL])
def test_legal_transition(source, event, expected) -> None:
    after = transitions.apply(machine(source), event, NOW, reason="because")
    if expected is None:
        assert after is None
    else:
        assert after.state == expected
        assert after.since == NOW
        assert after.reason == "because"


ILLEGAL = [(source, event)
           for source, event in itertools.product([None, *MachineState], Event)
           if (source, event) not in TRANSITIONS]


@pytest.mark.parametrize(("source", "event"), [p for p in ILLEGAL if p[0] is not None],
                         ids=[f"{s.value}-{e.value}" for s, e in ILLEGAL if s is not None])
def test_every_illegal_transition_raises(source, event) -> None:
    with pytest.raises(IllegalTransition, match=f"10.0.1.1: {event.value} is not allowed "
                                                f"from {source.value}"):
        transitions.apply(machine(source), event, NOW)


def test_only_admitted_creates_a_record() -> None:
    assert [e for s, e in TRANSITIONS if s is None] == [E.ADMITTED]
    created = transitions.admit("10.0.1.9", "cpu", NOW)
    assert (created.state, created.since, created.node_type) == (S.SPARE, NOW, "cpu")


def test_the_error_lists_what_is_allowed() -> None:
    with pytest.raises(IllegalTransition, match=r"allowed: add_requested, joined, "
                                                r"claimed, removed_from_inventory"):
        transitions.apply(machine(S.SPARE), E.DRAINED, NOW)


@pytest.mark.parametrize("event", sorted(transitions.FAILURE_EVENTS),
                         ids=[e.value for e in sorted(transitions.FAILURE_EVENTS)])
def test_failures_count_up_keep_the_error_and_back_off(event) -> None:
    source = next(s for (s, e) in TRANSITIONS if e == event and s is not None)
    before = machine(source, failures=2)
    after = transitions.apply(before, event, NOW, reason="r", error="ssh: no route to host",
                              backoff=Backoff(base_s=10, max_s=1000))
    assert after.state == S.FAILED
    assert after.failures == 3
    assert after.last_error == "ssh: no route to host"
    assert after.next_attempt_at == NOW + 40  # 10, 20, 40


@pytest.mark.parametrize(("failures", "delay"), [
    pytest.param(0, 0, id="none"),
    pytest.param(1, 30, id="first"),
    pytest.param(2, 60, id="second"),
    pytest.param(4, 240, id="fourth"),
    pytest.param(6, 900, id="capped"),
    pytest.param(500, 900, id="huge-count-stays-capped"),
])
def test_backoff_is_exponential_and_capped(failures, delay) -> None:
    assert Backoff(base_s=30, max_s=900).delay(failures) == delay


def test_a_join_after_an_add_counts_a_success_and_clears_failures() -> None:
    joined = transitions.apply(machine(S.JOINING, failures=3, next_attempt_at=9.0,
                                       success_count=1), E.JOINED, NOW)
    assert (joined.success_count, joined.failures, joined.next_attempt_at) == (2, 0, 0.0)


def test_an_adopted_machine_is_not_counted_as_a_successful_add() -> None:
    adopted = transitions.apply(machine(S.SPARE, success_count=1), E.JOINED, NOW)
    assert adopted.success_count == 1


def test_quarantine_keeps_the_reason_and_the_last_error() -> None:
    failed = machine(S.FAILED, failures=5, last_error="apt: 404")
    quarantined = transitions.apply(failed, E.QUARANTINE, NOW,
                                    reason="5 consecutive failures; last error: apt: 404")
    assert quarantined.reason == "5 consecutive failures; last error: apt: 404"
    assert quarantined.last_error == "apt: 404"
    assert quarantined.failures == 5


def test_release_clears_the_failures() -> None:
    released = transitions.apply(machine(S.QUARANTINED, failures=5), E.RELEASED, NOW)
    assert (released.state, released.failures) == (S.SPARE, 0)


def test_add_requested_records_the_run() -> None:
    joining = transitions.apply(machine(S.SPARE), E.ADD_REQUESTED, NOW, request_id="add-x")
    assert joining.request_id == "add-x"


def test_a_failed_drain_keeps_its_error() -> None:
    active = transitions.apply(machine(S.DRAINING), E.DRAIN_FAILED, NOW,
                               error="node is busy")
    assert (active.state, active.last_error, active.failures) == (S.ACTIVE, "node is busy", 0)


def test_a_canceled_join_is_retired_to_spare_without_a_failure_or_a_backoff() -> None:
    """join_canceled, then the normal retire path (drain, stop Ray) back to spare: the
    failure count, the backoff and the last error are those the machine had before."""
    before = machine(S.JOINING, failures=2, next_attempt_at=77.0, last_error="apt: 404",
                     success_count=1, request_id="add-cpu-1-abc")
    path = [(E.JOIN_CANCELED, S.CANCELED), (E.DRAIN_REQUESTED, S.DRAINING),
            (E.DRAINED, S.RETIRING), (E.RETIRED, S.SPARE)]
    current = before
    for step, (event, expected) in enumerate(path):
        current = transitions.apply(current, event, NOW + step, backoff=Backoff(10, 1000))
        assert current.state == expected
        assert (current.failures, current.next_attempt_at, current.last_error) == (
            2, 77.0, "apt: 404")
    assert current.success_count == 1
    assert E.JOIN_CANCELED not in transitions.FAILURE_EVENTS


def test_a_canceled_machine_is_neither_added_nor_adopted_before_it_is_retired() -> None:
    # (or started by `up` itself: joining under its claim)
    assert legal_events(S.CANCELED) == (E.DRAIN_REQUESTED, E.CLAIMED)
