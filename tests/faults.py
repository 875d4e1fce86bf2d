"""After a fault, was anything lost? Checks shared by the fault scripts (`bench/chaos.py`) and
the fault tests, as pure functions over what the agent's `status --json --no-decide` and Ray's
node list say.

Each check returns a `Report`: counts by name and one message per thing found. A check
asserts nothing; the caller decides when the pool has settled and which counts must be 0 (all
of `MUST_BE_ZERO`, for a fault the agent is meant to survive).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

STATES = frozenset({"spare", "joining", "active", "draining", "retiring", "failed",
                    "quarantined", "canceled"})
# States a machine passes through during a run; none should remain once the pool settled.
# A canceled machine waits for the retire that stops what its add started.
STUCK = {"joining": "stuck joining", "draining": "stuck retiring",
         "retiring": "stuck retiring", "canceled": "stuck retiring"}

LOST = "machines lost"  # a machine of the inventory with no record
RECORDED_TWICE = "recorded twice"  # one address in two records
UNKNOWN_STATE = "unknown state"
OUTSIDE_POOL = "outside the pool"  # a record, or an ALIVE Ray worker, of no inventory address
ACTIVE_NOT_IN_RAY = "active, not ALIVE in Ray"
IN_RAY_NOT_ACTIVE = "ALIVE in Ray, not active"  # leaked: Ray runs it, the agent does not count it
STUCK_JOINING = "stuck joining"
STUCK_RETIRING = "stuck retiring"
DOUBLE_BOOKED = "double-booked"  # one address in two unfinished runs
RUNS_UNFINISHED = "runs still running"
STORE_UNREADABLE = "state store unreadable"
DEMAND_UNSERVED = "demand unserved"  # pending actors that do not run

MUST_BE_ZERO = (LOST, RECORDED_TWICE, UNKNOWN_STATE, OUTSIDE_POOL, ACTIVE_NOT_IN_RAY,
                IN_RAY_NOT_ACTIVE, STUCK_JOINING, STUCK_RETIRING, DOUBLE_BOOKED,
                RUNS_UNFINISHED, STORE_UNREADABLE, DEMAND_UNSERVED)


@dataclass
class Report:
    counts: Counter[str] = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)

    def found(self, count: str, message: str) -> None:
        self.counts[count] += 1
        self.messages.append(f"{count}: {message}")

    def merge(self, *others: Report) -> Report:
        for other in others:
            self.counts.update(other.counts)
            self.messages.extend(other.messages)
        return self

    @property
    def clean(self) -> bool:
        return not any(self.counts[name] for name in MUST_BE_ZERO)


def alive_workers(nodes: Iterable[Mapping[str, Any]], head_ip: str) -> set[str]:
    """The addresses of the ALIVE worker nodes in a Ray node list: dicts with `ip`, and
    optionally `state` (ALIVE when absent, as in a list of ALIVE nodes only) and `head`."""
    return {str(node["ip"]) for node in nodes
            if node.get("state", "ALIVE") == "ALIVE" and not node.get("head")
            and node["ip"] != head_ip}


def check_records(status: Mapping[str, Any], inventory: Iterable[str]) -> Report:
    """Every worker of the inventory is recorded once, in a known state; nothing else is."""
    report, pool = Report(), set(inventory)
    seen = Counter(str(m["ip"]) for m in status["machines"])
    for address in sorted(pool - set(seen)):
        report.found(LOST, f"{address} is in the inventory but has no record")
    for address, times in sorted(seen.items()):
        if times > 1:
            report.found(RECORDED_TWICE, f"{address} has {times} records")
        if address not in pool:
            report.found(OUTSIDE_POOL, f"{address} is recorded but not in the inventory")
    for machine in status["machines"]:
        if machine["state"] not in STATES:
            report.found(UNKNOWN_STATE, f"{machine['ip']} is recorded {machine['state']!r}")
    return report


def check_agrees_with_ray(status: Mapping[str, Any], alive: set[str],
                          inventory: Iterable[str]) -> Report:
    """Active if and only if ALIVE in Ray; nothing joining or retiring any more."""
    report, pool = Report(), set(inventory)
    states = {str(m["ip"]): m["state"] for m in status["machines"]}
    for address, state in sorted(states.items()):
        if state == "active" and address not in alive:
            report.found(ACTIVE_NOT_IN_RAY, f"{address} is recorded active; Ray does not list "
                                            "it ALIVE")
        if state in STUCK:
            report.found(STUCK[state], f"{address} is still {state}")
    for address in sorted(alive):
        if address not in pool:
            report.found(OUTSIDE_POOL, f"Ray lists {address} ALIVE; it is not in the inventory")
        elif states.get(address, "active") != "active":
            report.found(IN_RAY_NOT_ACTIVE, f"Ray lists {address} ALIVE; it is recorded "
                                            f"{states[address]}")
    return report


def check_runs(status: Mapping[str, Any]) -> Report:
    """No machine in two unfinished runs; no run still running."""
    report = Report()
    booked: dict[str, list[str]] = {}
    for run in status["running"]:
        report.found(RUNS_UNFINISHED, f"{run['kind']} run {run['request_id']} on "
                                      f"{', '.join(run['ips'])} is still running")
        for address in run["ips"]:
            booked.setdefault(address, []).append(run["request_id"])
    for address, runs in sorted(booked.items()):
        if len(runs) > 1:
            report.found(DOUBLE_BOOKED, f"{address} is in the unfinished runs {', '.join(runs)}")
    return report


def check_store(status: Mapping[str, Any] | None, error: str = "") -> Report:
    """The state store opens: `status` answered (None: it did not, `error` says why)."""
    report = Report()
    if status is None:
        report.found(STORE_UNREADABLE, error.strip() or "status gave no answer")
    return report


def check_demand(wanted: int, placed: Sequence[str] | None, cluster: set[str],
                 error: str = "") -> Report:
    """The `wanted` pending actors run: `placed` is where each one runs (None: they did not
    all run in time, `error` says why), on nodes of the cluster."""
    report = Report()
    if placed is None:
        for _actor in range(wanted):
            report.found(DEMAND_UNSERVED, error.strip() or "the actors did not run in time")
        return report
    on_cluster = [address for address in placed if address in cluster]
    for _actor in range(wanted - len(on_cluster)):
        report.found(DEMAND_UNSERVED, f"{wanted} actors wanted, {len(on_cluster)} run on the "
                                      f"cluster ({', '.join(placed) or 'none'})")
    return report


def unsettled(status: Mapping[str, Any]) -> list[str]:
    """Why the pool is still moving: runs under way, machines in a passing state."""
    return ([f"run {run['request_id']} under way" for run in status["running"]]
            + [f"{m['ip']} {m['state']}" for m in status["machines"] if m["state"] in STUCK])


def check_pool(status: Mapping[str, Any] | None, nodes: Iterable[Mapping[str, Any]],
               inventory: Iterable[str], head_ip: str, status_error: str = "") -> Report:
    """Every check but the demand's, on one reading of the agent's status and Ray's nodes."""
    report = check_store(status, status_error)
    if status is None:
        return report
    pool = list(inventory)
    return report.merge(check_records(status, pool),
                        check_agrees_with_ray(status, alive_workers(nodes, head_ip), pool),
                        check_runs(status))
