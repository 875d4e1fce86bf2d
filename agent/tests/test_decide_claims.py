"""`up` and the agent at the same time: the workers `up` claims are never added by the agent,
join as "seen ALIVE in Ray" (never adopted), are not retired as idle while the claim is open,
a claim expires, and those a failed `up` releases are spare again at once; idle time counts
from the agent's first sight of a machine ALIVE, so a worker that just joined is not retired
as idle."""

from __future__ import annotations

import pytest
from decide_fixtures import (
    NOW,
    bundles,
    config,
    ip,
    machine,
    marked,
    node_type,
    retired,
    snapshot,
    worker,
)

from onprem_ray_agent.model import ActionKind, Claim, MachineState
from onprem_ray_agent.policy import decide

S = MachineState
CLAIM_ID = "up-999990-0123abcd"
PROVISION_S = 600.0


def cfg(**kwargs):
    kwargs.setdefault("provision_timeout_s", PROVISION_S)
    return config(node_type("cpu", 3), idle_timeout_minutes=5, **kwargs)


def claim(*indexes: int, at: float = NOW - 10, released: tuple[int, ...] = (),
          ended: bool = False) -> Claim:
    return Claim(claim_id=CLAIM_ID, at=at, ips=frozenset(ip("cpu", i) for i in indexes),
                 released=frozenset(ip("cpu", i) for i in released), ended=ended)


def decide_with(config, machines, snap, claimed: Claim | None = None, now: float = NOW):
    return decide(config, list(machines), snap, now, claim=claimed)


def joined_reasons(decision) -> dict[str, str]:
    return {address: action.reason for action in decision.of_kind(ActionKind.MARK)
            if action.event.value == "joined" for address in action.ips}


# ---------------------------------------------------------------- idle from the join


@pytest.mark.parametrize(("joined_ago", "ray_idle_s", "expected"), [
    (10.0, 9999.0, {}),  # Ray counts from its start; the agent saw it join 10 s ago
    (299.0, 9999.0, {}),
    (301.0, 9999.0, {ip("cpu", 1): "idle_expired"}),
    (9999.0, 301.0, {ip("cpu", 1): "idle_expired"}),
    (9999.0, 299.0, {}),  # busy lately: Ray's idle time is the shorter
])
def test_idle_time_counts_from_the_join_at_most(joined_ago, ray_idle_s, expected) -> None:
    machines = [machine("cpu", 1, "active", since=NOW - joined_ago)]
    decision = decide_with(cfg(), machines, snapshot(worker("cpu", 1, idle_s=ray_idle_s)))
    assert retired(decision) == expected


def test_a_machine_seen_alive_now_is_not_retired_as_idle_in_the_same_decision() -> None:
    machines = [machine("cpu", 1, "joining", request_id="add-cpu-1", since=NOW - 30)]
    decision = decide_with(cfg(), machines, snapshot(worker("cpu", 1, idle_s=9999)))
    assert marked(decision) == {ip("cpu", 1): "joined"}
    assert retired(decision) == {}


# ---------------------------------------------------------------- claims


def test_claimed_spares_are_joining_and_never_added_even_with_demand() -> None:
    machines = [machine("cpu", i) for i in (1, 2, 3)]
    # demand for 3 machines; up starts 2 of them: only the third is the agent's to add
    snap = snapshot(pending=[bundles({"CPU": 4}, count=3)])
    decision = decide_with(cfg(), machines, snap, claim(1, 2))
    assert marked(decision) == {ip("cpu", 1): "claimed", ip("cpu", 2): "claimed"}
    assert decision.ips_of(ActionKind.ADD) == (ip("cpu", 3),)
    (claimed,) = [a for a in decision.of_kind(ActionKind.MARK) if a.event.value == "claimed"]
    assert claimed.request_id == CLAIM_ID
    assert "started by up" in claimed.reason


def test_without_the_claim_the_same_spares_are_added() -> None:
    """The other side: the claim, not the demand, keeps them from being added."""
    machines = [machine("cpu", i) for i in (1, 2, 3)]
    snap = snapshot(pending=[bundles({"CPU": 4}, count=3)])
    decision = decide_with(cfg(), machines, snap, None)
    assert sorted(decision.ips_of(ActionKind.ADD)) == [ip("cpu", i) for i in (1, 2, 3)]


def test_claimed_machines_count_towards_min_workers() -> None:
    machines = [machine("cpu", i) for i in (1, 2, 3)]
    decision = decide_with(cfg(min_workers=1), machines, snapshot(), claim(2))
    assert decision.ips_of(ActionKind.ADD) == ()
    unclaimed = decide_with(cfg(min_workers=1), machines, snapshot(), None)
    assert len(unclaimed.ips_of(ActionKind.ADD)) == 1


@pytest.mark.parametrize("state", ["spare", "failed", "canceled"])
def test_a_claimed_machine_alive_in_ray_joins_and_is_not_adopted(state) -> None:
    machines = [machine("cpu", 1, state, since=NOW - 100, request_id="add-cpu-0",
                        failures=1 if state == "failed" else 0,
                        next_attempt_at=NOW + 500 if state == "failed" else 0.0)]
    decision = decide_with(cfg(), machines, snapshot(worker("cpu", 1, idle_s=9999)), claim(1))
    reasons = joined_reasons(decision)
    assert reasons[ip("cpu", 1)].startswith("seen ALIVE in Ray (started by up")
    assert "adopted" not in reasons[ip("cpu", 1)]
    assert retired(decision) == {}  # a canceled one is not retired either
    events = [(a.event.value, a.ips) for a in decision.actions if ip("cpu", 1) in a.ips]
    assert events == [("claimed", (ip("cpu", 1),)), ("joined", (ip("cpu", 1),))]


def test_unclaimed_the_same_machine_is_adopted() -> None:
    machines = [machine("cpu", 1, "spare", since=NOW - 100)]
    decision = decide_with(cfg(), machines, snapshot(worker("cpu", 1)), None)
    assert "adopted" in joined_reasons(decision)[ip("cpu", 1)]


def test_on_the_agents_first_start_claimed_workers_join_as_started_by_up() -> None:
    """The first `up`: no record yet; the workers `up` started are ALIVE or not yet."""
    decision = decide_with(cfg(min_workers=3), [], snapshot(worker("cpu", 1, idle_s=9999)),
                           claim(1, 2, 3))
    assert decision.ips_of(ActionKind.ADMIT) == tuple(ip("cpu", i) for i in (1, 2, 3))
    assert decision.ips_of(ActionKind.ADD) == ()
    assert marked(decision) == {ip("cpu", 1): "joined", ip("cpu", 2): "claimed",
                                ip("cpu", 3): "claimed"}
    assert joined_reasons(decision)[ip("cpu", 1)].startswith("seen ALIVE in Ray (started by up")
    assert retired(decision) == {}


def test_a_claimed_joining_machine_joins_when_ray_lists_it() -> None:
    machines = [machine("cpu", 1, "joining", request_id=CLAIM_ID, since=NOW - 5)]
    decision = decide_with(cfg(), machines, snapshot(worker("cpu", 1, idle_s=9999)),
                           claim(1, at=NOW - 6))
    assert marked(decision) == {ip("cpu", 1): "joined"}
    assert CLAIM_ID in joined_reasons(decision)[ip("cpu", 1)]


def test_a_machine_in_an_agents_add_run_stays_the_runs() -> None:
    machines = [machine("cpu", 1, "joining", request_id="add-cpu-1", since=NOW - 20)]
    decision = decide_with(cfg(), machines, snapshot(), claim(1))
    assert marked(decision) == {}
    assert any("left to the run" in note for note in decision.notes), decision.notes


def test_a_claim_is_spent_once_the_record_changed_after_it() -> None:
    """Joined under the claim, retired since: the claim (still young) holds it no more."""
    machines = [machine("cpu", 1, "spare", since=NOW - 5, request_id="retire-cpu-1")]
    snap = snapshot(pending=[bundles({"CPU": 4})])
    decision = decide_with(cfg(), machines, snap, claim(1, at=NOW - 60))
    assert marked(decision) == {}
    assert decision.ips_of(ActionKind.ADD) == (ip("cpu", 1),)


def test_a_claim_older_than_the_provision_timeout_is_ignored() -> None:
    machines = [machine("cpu", i, since=NOW - 5000) for i in (1, 2)]
    snap = snapshot(pending=[bundles({"CPU": 4})])
    old = decide_with(cfg(), machines, snap, claim(1, 2, at=NOW - PROVISION_S - 1))
    assert marked(old) == {} and len(old.ips_of(ActionKind.ADD)) == 1
    young = decide_with(cfg(), machines, snap, claim(1, 2, at=NOW - PROVISION_S + 1))
    assert set(marked(young).values()) == {"claimed"} and young.ips_of(ActionKind.ADD) == ()


def test_a_claimed_machine_not_alive_by_the_provision_timeout_is_spare_without_a_failure(
        ) -> None:
    machines = [machine("cpu", 1, "joining", request_id=CLAIM_ID, since=NOW - PROVISION_S - 1)]
    decision = decide_with(cfg(), machines, snapshot())
    assert marked(decision) == {ip("cpu", 1): "claim_expired"}
    # within the timeout it keeps joining
    waiting = decide_with(cfg(), [machine("cpu", 1, "joining", request_id=CLAIM_ID,
                                          since=NOW - PROVISION_S + 1)], snapshot())
    assert marked(waiting) == {}
    # an agent's add past the same timeout fails (a fault of the machine)
    add = decide_with(cfg(), [machine("cpu", 1, "joining", request_id="add-cpu-1",
                                      since=NOW - PROVISION_S - 1)], snapshot())
    assert marked(add) == {ip("cpu", 1): "provision_timeout"}


def test_a_later_up_renews_a_claimed_join() -> None:
    machines = [machine("cpu", 1, "joining", request_id="up-1-00000000", since=NOW - 500)]
    decision = decide_with(cfg(), machines, snapshot(), claim(1, at=NOW - 10))
    (action,) = decision.of_kind(ActionKind.MARK)
    assert (action.event.value, action.request_id) == ("claimed", CLAIM_ID)


def test_a_claimed_join_is_never_canceled() -> None:
    """No demand needs it, long past cancel_join_after_s: there is no run to cancel, `up`
    starts it (an agent's add in the same situation is canceled)."""
    claimed = [machine("cpu", 1, "joining", request_id=CLAIM_ID, since=NOW - 100)]
    decision = decide(cfg(), claimed, snapshot(), NOW, running_adds=set(),
                      unneeded_since={CLAIM_ID: NOW - 1000})
    assert decision.of_kind(ActionKind.CANCEL) == ()
    added = [machine("cpu", 1, "joining", request_id="add-cpu-1", since=NOW - 100)]
    canceled = decide(cfg(), added, snapshot(), NOW, running_adds={"add-cpu-1"},
                      unneeded_since={"add-cpu-1": NOW - 1000})
    assert len(canceled.of_kind(ActionKind.CANCEL)) == 1


# ---------------------------------------------------------------- held while up runs


def idle_claimed(*indexes: int, joined_ago: float = 400.0) -> list:
    """Machines that joined under the claim `joined_ago` s ago (idle timeout 300 s)."""
    return [machine("cpu", i, "active", request_id=CLAIM_ID, since=NOW - joined_ago)
            for i in indexes]


def idle_workers(*indexes: int):
    return snapshot(*(worker("cpu", i, idle_s=9999) for i in indexes))


def test_an_open_claim_holds_an_idle_worker_up_started() -> None:
    """`up` may still be waiting for it (or for other workers): not retired as idle."""
    decision = decide_with(cfg(), idle_claimed(1, 2), idle_workers(1, 2),
                           claim(1, 2, at=NOW - 500))
    assert retired(decision) == {}
    (note,) = [n for n in decision.notes if "has not ended its claim" in n]
    assert ip("cpu", 1) in note and ip("cpu", 2) in note and CLAIM_ID in note


def test_an_ended_claim_holds_nothing_and_the_idle_time_counts_from_the_join() -> None:
    decision = decide_with(cfg(), idle_claimed(1, 2), idle_workers(1, 2),
                           claim(1, 2, at=NOW - 500, ended=True))
    assert retired(decision) == {ip("cpu", 1): "idle_expired", ip("cpu", 2): "idle_expired"}
    # joined 100 s ago: not idle for long yet, ended or not
    young = decide_with(cfg(), idle_claimed(1, joined_ago=100), idle_workers(1),
                        claim(1, at=NOW - 500, ended=True))
    assert retired(young) == {}


def test_without_a_claim_the_same_idle_workers_retire() -> None:
    decision = decide_with(cfg(), idle_claimed(1, 2), idle_workers(1, 2), None)
    assert set(retired(decision)) == {ip("cpu", 1), ip("cpu", 2)}


def test_an_open_claim_older_than_the_provision_timeout_holds_nothing() -> None:
    """`up` stopped without ending it (killed, or Ansible ended the run first)."""
    expired = decide_with(cfg(), idle_claimed(1), idle_workers(1),
                          claim(1, at=NOW - PROVISION_S - 1))
    assert retired(expired) == {ip("cpu", 1): "idle_expired"}
    young = decide_with(cfg(), idle_claimed(1), idle_workers(1),
                        claim(1, at=NOW - PROVISION_S + 1))
    assert retired(young) == {}


def test_an_open_claim_holds_only_the_workers_it_names() -> None:
    """A worker released from it, or not in it (the agent's own), retires as usual."""
    machines = [*idle_claimed(1, 2),
                machine("cpu", 3, "active", request_id="add-cpu-1", since=NOW - 400)]
    decision = decide_with(cfg(), machines, idle_workers(1, 2, 3),
                           claim(1, 2, at=NOW - 500, released=(2,)))
    assert set(retired(decision)) == {ip("cpu", 2), ip("cpu", 3)}


def test_an_open_claim_holds_an_active_worker_it_names_from_before_the_claim() -> None:
    """Already running when `up` claimed it (or recorded active by a store rebuilt since):
    `up` starts Ray there too, and waits for it."""
    for since, request_id in ((NOW - 1000, "add-cpu-1"), (NOW - 400, "")):
        machines = [machine("cpu", 1, "active", request_id=request_id, since=since)]
        decision = decide_with(cfg(), machines, idle_workers(1), claim(1, at=NOW - 500))
        assert retired(decision) == {}, (since, request_id)


def test_an_open_claim_spent_at_a_machine_is_not_applied_again() -> None:
    """The claim file stays while `up` runs: a machine that joined under it and was retired
    since (e.g. above max_workers) is spare with another run's id: not claimed again."""
    machines = [machine("cpu", 1, "spare", request_id="retire-cpu-1", since=NOW - 100)]
    snap = snapshot(pending=[bundles({"CPU": 4})])
    decision = decide_with(cfg(), machines, snap, claim(1, at=NOW - 500))
    assert marked(decision) == {} and decision.ips_of(ActionKind.ADD) == (ip("cpu", 1),)
    # released under it already (it names the claim): not claimed again either
    machines = [machine("cpu", 1, "spare", request_id=CLAIM_ID, since=NOW - 100)]
    decision = decide_with(cfg(), machines, snap, claim(1, at=NOW - 500))
    assert marked(decision) == {} and decision.ips_of(ActionKind.ADD) == (ip("cpu", 1),)


def test_a_store_rebuilt_while_up_runs_is_claimed_again() -> None:
    """--rebuild-state records every machine anew (no request id), after the claim: `up`
    still starts Ray on the spare ones, so the agent must not add them."""
    machines = [machine("cpu", 1, "spare", since=NOW - 100)]
    snap = snapshot(pending=[bundles({"CPU": 4})])
    decision = decide_with(cfg(), machines, snap, claim(1, at=NOW - 500))
    assert marked(decision) == {ip("cpu", 1): "claimed"}
    assert decision.ips_of(ActionKind.ADD) == ()


# ---------------------------------------------------------------- released by a failed up


def claimed_joining(*indexes: int) -> list:
    """Machines the agent made joining under the claim (written at NOW - 200) at NOW - 100."""
    return [machine("cpu", i, "joining", request_id=CLAIM_ID, since=NOW - 100) for i in indexes]


def released(*kept: int, released: tuple[int, ...]) -> Claim:
    """The claim as up_claim leaves it after its release: kept and released addresses."""
    return claim(*kept, at=NOW - 200, released=released)


def test_a_released_machine_is_spare_at_once_and_the_demand_it_held_is_added() -> None:
    """`up` started 1 and 2 and ended with 1 not ALIVE: demand for two machines, 2 joining;
    the agent adds one now instead of waiting provision_timeout_s for 1."""
    snap = snapshot(pending=[bundles({"CPU": 4}, count=2)])
    decision = decide_with(cfg(), claimed_joining(1, 2), snap, released(2, released=(1,)))
    assert marked(decision) == {ip("cpu", 1): "claim_released"}
    (mark,) = decision.of_kind(ActionKind.MARK)
    assert "no failure counted" in mark.reason and CLAIM_ID in mark.reason
    assert len(decision.ips_of(ActionKind.ADD)) == 1
    assert ip("cpu", 2) not in decision.ips_of(ActionKind.ADD)


def test_without_the_release_the_same_claimed_machine_holds_the_demand() -> None:
    """The other side: the same state with the claim not released adds nothing."""
    snap = snapshot(pending=[bundles({"CPU": 4}, count=2)])
    decision = decide_with(cfg(), claimed_joining(1, 2), snap, claim(1, 2, at=NOW - 200))
    assert marked(decision) == {}
    assert decision.ips_of(ActionKind.ADD) == ()


def test_a_released_machine_that_ray_lists_alive_joins_as_started_by_up() -> None:
    decision = decide_with(cfg(), claimed_joining(1), snapshot(worker("cpu", 1, idle_s=9999)),
                           released(released=(1,)))
    assert marked(decision) == {ip("cpu", 1): "joined"}
    assert joined_reasons(decision)[ip("cpu", 1)].startswith("seen ALIVE in Ray (started by up")


@pytest.mark.parametrize("recorded", [
    "none",  # the agent's first start: the claim and its release read at once
    "spare-before-the-claim",
])
def test_a_machine_released_before_the_agent_applied_the_claim_is_never_claimed(
        recorded) -> None:
    machines = [] if recorded == "none" else [machine("cpu", 1, since=NOW - 5000)]
    # released wins even where the claim still lists the address
    both = released(1, 2, released=(1,))
    snap = snapshot(pending=[bundles({"CPU": 4})])
    decision = decide_with(cfg(), machines, snap, both)
    assert marked(decision) == {ip("cpu", 2): "claimed"}
    assert decision.ips_of(ActionKind.ADD) == ()  # 2, claimed, serves the one bundle
    more = decide_with(cfg(), machines, snapshot(pending=[bundles({"CPU": 4}, count=2)]), both)
    assert len(more.ips_of(ActionKind.ADD)) == 1


@pytest.mark.parametrize(("state", "request_id"), [
    ("joining", "up-1-00000000"),  # claimed again by a later up since
    ("joining", "add-cpu-1"),  # in an add run of the agent
    ("active", CLAIM_ID),  # joined under the claim
    ("spare", CLAIM_ID),  # expired, or released already
])
def test_a_release_moves_only_a_machine_joining_under_its_own_claim(state, request_id) -> None:
    machines = [machine("cpu", 1, state, request_id=request_id, since=NOW - 100)]
    snap = snapshot(worker("cpu", 1)) if state == "active" else snapshot()
    decision = decide_with(cfg(), machines, snap, released(released=(1,)))
    assert "claim_released" not in marked(decision).values()


def test_claims_outside_the_inventory_are_ignored() -> None:
    outside = Claim(claim_id=CLAIM_ID, at=NOW - 10, ips=frozenset({"10.9.9.9"}))
    decision = decide_with(cfg(), [machine("cpu", 1)], snapshot(), outside)
    assert marked(decision) == {} and "10.9.9.9" not in decision.ips_of(ActionKind.ADMIT)


def test_a_claim_id_must_say_it_is_ups() -> None:
    with pytest.raises(ValueError, match="starts with 'up-'"):
        Claim(claim_id="add-cpu-1", at=NOW, ips=frozenset())
