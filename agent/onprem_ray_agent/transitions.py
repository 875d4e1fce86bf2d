"""The machine lifecycle as an explicit transition table, in the style of Ray autoscaler v2's
`InstanceUtil.get_valid_transitions`: every (state, event) pair not listed is illegal and raises.

`None` stands for "no record": an IP enters with `admitted` and leaves with
`removed_from_inventory`.
"""

from __future__ import annotations

import dataclasses

from onprem_ray_agent.model import Backoff, Event, Machine, MachineState

S = MachineState
E = Event

TRANSITIONS: dict[tuple[MachineState | None, Event], MachineState | None] = {
    (None, E.ADMITTED): S.SPARE,
    # add_workers runs on it
    (S.SPARE, E.ADD_REQUESTED): S.JOINING,
    # Ray lists it ALIVE: a finished add, or a machine found running Ray (adopted after a crash
    # or a manual start) so that it is never leaked
    (S.JOINING, E.JOINED): S.ACTIVE,
    (S.SPARE, E.JOINED): S.ACTIVE,
    (S.FAILED, E.JOINED): S.ACTIVE,
    # an add that failed (e.g. the network cut mid-add) may have started Ray after all: a
    # machine serving work is active, whatever its failures said
    (S.QUARANTINED, E.JOINED): S.ACTIVE,
    (S.JOINING, E.ADD_FAILED): S.FAILED,
    (S.JOINING, E.UNREACHABLE): S.FAILED,
    (S.JOINING, E.PROVISION_TIMEOUT): S.FAILED,
    # the agent canceled its add run, no demand needing it: not a fault of the machine (no
    # failure, no backoff); retire_workers then stops whatever the run had started there
    (S.JOINING, E.JOIN_CANCELED): S.CANCELED,
    (S.CANCELED, E.DRAIN_REQUESTED): S.DRAINING,
    # `up` starts Ray there itself: joining with no run (a claim renewed by a later `up`);
    # not ALIVE within the provision timeout (`up` stopped first), or released by an `up` that
    # failed there (it reports that failure itself): spare again, no failure
    (S.SPARE, E.CLAIMED): S.JOINING,
    (S.FAILED, E.CLAIMED): S.JOINING,
    (S.CANCELED, E.CLAIMED): S.JOINING,
    (S.JOINING, E.CLAIMED): S.JOINING,
    (S.JOINING, E.CLAIM_EXPIRED): S.SPARE,
    (S.JOINING, E.CLAIM_RELEASED): S.SPARE,
    # the raylet died and did not come back, or the machine went away
    (S.ACTIVE, E.LOST): S.FAILED,
    (S.ACTIVE, E.IDLE_EXPIRED): S.DRAINING,
    (S.ACTIVE, E.DRAIN_REQUESTED): S.DRAINING,
    (S.DRAINING, E.DRAINED): S.RETIRING,
    # Ray refused the drain or it missed its deadline: the node keeps working
    (S.DRAINING, E.DRAIN_FAILED): S.ACTIVE,
    (S.RETIRING, E.RETIRED): S.SPARE,
    (S.RETIRING, E.RETIRE_FAILED): S.FAILED,
    (S.RETIRING, E.UNREACHABLE): S.FAILED,
    (S.FAILED, E.BACKOFF_ELAPSED): S.SPARE,
    (S.FAILED, E.QUARANTINE): S.QUARANTINED,
    (S.QUARANTINED, E.RELEASED): S.SPARE,
    (S.SPARE, E.REMOVED_FROM_INVENTORY): None,
    (S.FAILED, E.REMOVED_FROM_INVENTORY): None,
    (S.QUARANTINED, E.REMOVED_FROM_INVENTORY): None,
}

# Events that count as a failure of the machine: they raise `failures` and start a backoff.
FAILURE_EVENTS = frozenset(
    {E.ADD_FAILED, E.UNREACHABLE, E.PROVISION_TIMEOUT, E.LOST, E.RETIRE_FAILED}
)


class IllegalTransition(ValueError):
    """An event that the lifecycle does not allow in the machine's current state."""


def legal_events(state: MachineState | None) -> tuple[Event, ...]:
    return tuple(event for (source, event) in TRANSITIONS if source == state)


def target(state: MachineState | None, event: Event, ip: str = "") -> MachineState | None:
    """The state `event` leads to from `state`; raises IllegalTransition if there is none."""
    key = (state, event)
    if key not in TRANSITIONS:
        where = f"{ip}: " if ip else ""
        shown = state.value if state is not None else "no record"
        legal = ", ".join(e.value for e in legal_events(state)) or "none"
        raise IllegalTransition(
            f"{where}{event.value} is not allowed from {shown} (allowed: {legal})"
        )
    return TRANSITIONS[key]


def admit(ip: str, node_type: str, now: float, reason: str = "") -> Machine:
    """The record of an IP that appeared in the inventory."""
    target(None, E.ADMITTED, ip)
    return Machine(ip=ip, node_type=node_type, state=S.SPARE, since=now,
                   reason=reason or "added to the inventory")


def apply(
    machine: Machine,
    event: Event,
    now: float,
    *,
    reason: str = "",
    error: str = "",
    request_id: str = "",
    backoff: Backoff | None = None,
) -> Machine | None:
    """The machine after `event` at `now`; None when the record is to be forgotten.

    Failures count up and set `next_attempt_at` by `backoff`; a join resets them and, after an
    add, counts a success.
    """
    state = target(machine.state, event, machine.ip)
    if state is None:
        return None
    changes: dict[str, object] = {
        "state": state,
        "since": now,
        "reason": reason or event.value.replace("_", " "),
    }
    if request_id:
        changes["request_id"] = request_id
    if event in FAILURE_EVENTS:
        failures = machine.failures + 1
        changes["failures"] = failures
        changes["last_error"] = error or reason or event.value.replace("_", " ")
        changes["next_attempt_at"] = now + (backoff or Backoff()).delay(failures)
    elif error:
        changes["last_error"] = error
    if event == E.JOINED:
        changes["failures"] = 0
        changes["next_attempt_at"] = 0.0
        if machine.state == S.JOINING:
            changes["success_count"] = machine.success_count + 1
    elif event == E.RELEASED:
        changes["failures"] = 0
        changes["next_attempt_at"] = 0.0
    return dataclasses.replace(machine, **changes)
