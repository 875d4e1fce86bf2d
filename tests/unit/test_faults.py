"""The "nothing was lost" checks of tests/faults.py, fed crafted status and Ray data: each
count is 0 on a healthy pool and each one can be raised."""

from __future__ import annotations

from typing import Any

import pytest

from tests import faults

HEAD = "10.9.0.10"
W1, W2, W3 = "10.9.0.11", "10.9.0.12", "10.9.0.13"
POOL = [W1, W2, W3]


def machine(ip: str, state: str) -> dict[str, Any]:
    return {"ip": ip, "node_type": "cpu", "state": state, "since": 1.0, "reason": "",
            "last_error": "", "failures": 0, "next_attempt_at": 0.0, "request_id": "",
            "success_count": 0}


def run(request_id: str, kind: str, *ips: str) -> dict[str, Any]:
    return {"request_id": request_id, "kind": kind, "ips": list(ips), "started": 1.0,
            "finished": None, "outcome": None, "hosts": {}, "output_tail": ""}


def status(states: dict[str, str], running: list[dict[str, Any]] | None = None
           ) -> dict[str, Any]:
    return {"machines": [machine(ip, state) for ip, state in states.items()],
            "running": running or [], "recent_runs": []}


def nodes(*alive: str, dead: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return ([{"ip": HEAD, "head": True, "state": "ALIVE"}]
            + [{"ip": ip, "head": False, "state": "ALIVE"} for ip in alive]
            + [{"ip": ip, "head": False, "state": "DEAD"} for ip in dead])


HEALTHY = status({W1: "active", W2: "spare", W3: "failed"})


def counts(report: faults.Report) -> dict[str, int]:
    return {name: n for name, n in report.counts.items() if n}


def test_a_healthy_pool_counts_nothing() -> None:
    report = faults.check_pool(HEALTHY, nodes(W1, dead=(W2,)), POOL, HEAD)
    report.merge(faults.check_demand(3, [HEAD, HEAD, W1], {HEAD, W1}))
    assert counts(report) == {} and report.messages == [] and report.clean
    assert faults.unsettled(HEALTHY) == []


def test_alive_workers_leave_out_the_head_and_dead_nodes() -> None:
    assert faults.alive_workers(nodes(W1, W2, dead=(W3,)), HEAD) == {W1, W2}
    # A list of ALIVE nodes only (no state), the head told by its address alone.
    assert faults.alive_workers([{"ip": HEAD}, {"ip": W3}], HEAD) == {W3}


def test_a_machine_of_the_inventory_without_a_record_is_lost() -> None:
    report = faults.check_records(status({W1: "active", W3: "spare"}), POOL)
    assert counts(report) == {faults.LOST: 1} and not report.clean
    assert W2 in report.messages[0]


@pytest.mark.parametrize(("records", "count"), [
    ([machine(W1, "active"), machine(W1, "spare"), machine(W2, "spare"),
      machine(W3, "spare")], faults.RECORDED_TWICE),
    ([machine(W1, "asleep"), machine(W2, "spare"), machine(W3, "spare")],
     faults.UNKNOWN_STATE),
    ([machine(W1, "spare"), machine(W2, "spare"), machine(W3, "spare"),
      machine("10.9.0.99", "spare")], faults.OUTSIDE_POOL),
])
def test_each_record_fault_is_counted(records: list[dict[str, Any]], count: str) -> None:
    report = faults.check_records({"machines": records, "running": []}, POOL)
    assert counts(report) == {count: 1}, report.messages
    assert not report.clean


def test_active_but_not_alive_in_ray_is_counted() -> None:
    report = faults.check_agrees_with_ray(status({W1: "active", W2: "active", W3: "spare"}),
                                          {W1}, POOL)
    assert counts(report) == {faults.ACTIVE_NOT_IN_RAY: 1}
    assert W2 in report.messages[0]


@pytest.mark.parametrize("state", ["spare", "failed", "quarantined"])
def test_alive_in_ray_but_not_active_is_counted(state: str) -> None:
    report = faults.check_agrees_with_ray(status({W1: state, W2: "spare", W3: "spare"}),
                                          {W1}, POOL)
    assert counts(report) == {faults.IN_RAY_NOT_ACTIVE: 1}
    assert state in report.messages[0]


def test_an_alive_ray_worker_outside_the_inventory_is_counted() -> None:
    report = faults.check_pool(HEALTHY, nodes(W1, "10.9.0.77"), POOL, HEAD)
    assert counts(report) == {faults.OUTSIDE_POOL: 1}


@pytest.mark.parametrize(("state", "count"), [
    ("joining", faults.STUCK_JOINING), ("draining", faults.STUCK_RETIRING),
    ("retiring", faults.STUCK_RETIRING), ("canceled", faults.STUCK_RETIRING)])
def test_a_machine_left_in_a_passing_state_is_stuck(state: str, count: str) -> None:
    # Not ALIVE in Ray, so only the passing state is counted.
    still = status({W1: state, W2: "spare", W3: "spare"})
    report = faults.check_agrees_with_ray(still, set(), POOL)
    assert counts(report) == {count: 1}
    assert faults.unsettled(still) == [f"{W1} {state}"]


def test_a_machine_in_two_unfinished_runs_is_double_booked() -> None:
    both = status({W1: "joining", W2: "joining", W3: "spare"},
                  running=[run("add-1", "add", W1, W2), run("retire-2", "retire", W2)])
    report = faults.check_runs(both)
    assert counts(report) == {faults.DOUBLE_BOOKED: 1, faults.RUNS_UNFINISHED: 2}
    assert any(W2 in m and "add-1" in m and "retire-2" in m for m in report.messages)
    assert faults.unsettled(both)[:2] == ["run add-1 under way", "run retire-2 under way"]


def test_one_run_still_running_is_not_double_booked() -> None:
    report = faults.check_runs(status({W1: "joining"}, running=[run("add-1", "add", W1, W2)]))
    assert counts(report) == {faults.RUNS_UNFINISHED: 1}


def test_a_status_that_did_not_answer_is_an_unreadable_store() -> None:
    report = faults.check_pool(None, nodes(W1), POOL, HEAD,
                               status_error="state store ... is damaged\n")
    assert counts(report) == {faults.STORE_UNREADABLE: 1}
    assert report.messages == [f"{faults.STORE_UNREADABLE}: state store ... is damaged"]


@pytest.mark.parametrize(("placed", "unserved"), [
    (None, 3),  # they did not all run in time
    ([HEAD, W1], 1),  # one fewer than wanted
    ([HEAD, W1, "10.9.0.77"], 1),  # one runs somewhere that is not the cluster
    ([HEAD, W1, W1], 0),
])
def test_pending_actors_that_do_not_run_are_unserved(placed: list[str] | None,
                                                     unserved: int) -> None:
    report = faults.check_demand(3, placed, {HEAD, W1}, error="GetTimeoutError")
    assert report.counts[faults.DEMAND_UNSERVED] == unserved
    assert report.clean is (unserved == 0)


def test_merge_adds_counts_and_keeps_every_message() -> None:
    lost = faults.check_records(status({W1: "spare"}), POOL)
    stuck = faults.check_agrees_with_ray(status({W1: "joining"}), set(), POOL)
    total = faults.Report().merge(lost, stuck, lost)
    assert counts(total) == {faults.LOST: 4, faults.STUCK_JOINING: 1}
    assert len(total.messages) == 5
