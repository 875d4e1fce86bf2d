"""`status`: every machine's state, since when, why and its last error; the runs under way
and the latest ones; Ray's pending demand and what the agent will do next.

The running agent writes its last iteration to `<state dir>/status.json` (atomically); `status`
reads that and the state store (read-only, beside the running agent), and can decide afresh
when given the cluster file and the GCS address.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from onprem_ray_agent.codec import (
    decision_to_dict,
    machine_to_dict,
    selector_to_dict,
    selectors_to_dict,
)
from onprem_ray_agent.demand import pending_by_resource
from onprem_ray_agent.loop import IterationReport
from onprem_ray_agent.model import DemandSnapshot, PlacementGroupDemand, format_resources
from onprem_ray_agent.store import Run, StateStore

STATUS_FILE = "status.json"
RECENT_RUNS = 10


def _group_to_dict(group: PlacementGroupDemand) -> dict[str, Any]:
    out: dict[str, Any] = {"id": group.id, "strategy": group.strategy.value,
                           "bundles": [dict(b) for b in group.bundles]}
    if group.bundle_selectors:
        out["bundle_label_selectors"] = [
            selector_to_dict(group.selectors(i)[0]) if group.selectors(i) else {}
            for i in range(len(group.bundles))]
    if group.placed_on:
        out["placed_on"] = list(group.placed_on)
    return out


def demand_to_dict(demand: DemandSnapshot) -> dict[str, Any]:
    """Ray's demand as the plan format writes it (with each node's labels)."""
    return {
        "pending": [{"resources": dict(b.resources), "count": b.count}
                    | selectors_to_dict(b.label_selectors) for b in demand.pending],
        "placement_groups": [_group_to_dict(g) for g in demand.placement_groups],
        "constraints": [{"resources": dict(b.resources), "count": b.count}
                        | selectors_to_dict(b.label_selectors) for b in demand.constraints],
        "by_resource": pending_by_resource(demand),
        "nodes": [{"ip": n.ip, "state": n.state.value, "idle_s": n.idle_s,
                   "labels": dict(n.labels)} for n in demand.nodes],
    }


def report_to_dict(report: IterationReport) -> dict[str, Any]:
    return {
        "time": report.now,
        "dry_run": report.dry_run,
        "ray_error": report.ray_error,
        "demand": demand_to_dict(report.demand) if report.demand else None,
        "decision": decision_to_dict(report.decision) if report.decision else None,
        "held": list(report.held),
        "started": list(report.started),
        "duration_s": report.duration_s,
    }


def write_status_file(state_dir: Path, report: IterationReport, **agent: str) -> None:
    """Replace `status.json` atomically: a reader sees the old iteration or the new one.
    `agent`: how the agent runs (cluster_file, gcs_address), so that `status` can decide
    afresh without being told."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".status-", dir=state_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(report_to_dict(report) | {"agent": agent}, stream, indent=1)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, state_dir / STATUS_FILE)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def read_status_file(state_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _run_to_dict(run: Run) -> dict[str, Any]:
    return {"request_id": run.request_id, "kind": run.kind, "ips": list(run.ips),
            "started": run.started, "finished": run.finished, "outcome": run.outcome,
            "hosts": dict(run.hosts), "output_tail": run.output_tail}


def collect_status(store: StateStore, state_dir: Path,
                   fresh: IterationReport | None = None) -> dict[str, Any]:
    """Everything `status` shows, as JSON-ready data. `fresh`: a dry iteration just now."""
    last = read_status_file(state_dir)
    if fresh is not None and not fresh.ok:
        fresh = None  # Ray did not answer: the last iteration is all there is
    return {
        "machines": [machine_to_dict(m) for m in store.machines().values()],
        "running": [_run_to_dict(r) for r in store.runs(limit=1000, unfinished_only=True)],
        "recent_runs": [_run_to_dict(r) for r in store.runs(limit=RECENT_RUNS)
                        if r.finished is not None],
        "last_iteration": last,
        "next": report_to_dict(fresh) if fresh is not None else last,
        "next_is_fresh": fresh is not None,
    }


# ---------------------------------------------------------------- text


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _clock(then: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(then))


def _ago(then: float | None, now: float) -> str:
    if not then:
        return "-"
    return f"{_span(max(0.0, now - then))} ago ({_clock(then)})"


def _in(then: float, now: float) -> str:
    return f"in {_span(max(0.0, then - now))} ({_clock(then)})"


def _indent(text: str, prefix: str = "      ") -> str:
    return "\n".join(prefix + line for line in text.strip().splitlines())


def _selector_text(selector: dict[str, str]) -> str:
    return "{" + ", ".join(f"{key}={value}" for key, value in selector.items()) + "}"


def _labels_text(item: dict[str, Any]) -> str:
    """' with labels {gpu=a100} or {gpu=l4}' for demand with selectors, else ''."""
    if not item.get("label_selector"):
        return ""
    selectors = [item["label_selector"], *item.get("fallback_label_selectors", [])]
    return " with labels " + " or ".join(_selector_text(s) for s in selectors)


def _bundle_text(group: dict[str, Any], index: int) -> str:
    selectors = group.get("bundle_label_selectors") or []
    selector = selectors[index] if index < len(selectors) else {}
    text = format_resources(group["bundles"][index])
    return f"{text} with labels {_selector_text(selector)}" if selector else text


def _demand_lines(demand: dict[str, Any] | None) -> list[str]:
    if not demand:
        return ["  (unknown: Ray was not asked)"]
    lines = [f"  {b['count']} x {format_resources(b['resources'])}{_labels_text(b)} "
             "(tasks and actors)" for b in demand["pending"]]
    for g in demand["placement_groups"]:
        placed = (f" (partly placed, on {', '.join(g['placed_on'])})"
                  if g.get("placed_on") else "")
        lines.append(f"  placement group {g['id']} {g['strategy']}{placed}: "
                     + ", ".join(_bundle_text(g, i) for i in range(len(g["bundles"]))))
    lines += [f"  {b['count']} x {format_resources(b['resources'])}{_labels_text(b)} "
              "(request_resources)" for b in demand["constraints"]]
    return lines or ["  none"]


def render(status: dict[str, Any], now: float) -> str:
    out = []
    machines = status["machines"]
    out.append(f"Machines ({len(machines)}):")
    if not machines:
        out.append("  none recorded yet")
    width = max((len(m["ip"]) for m in machines), default=2)
    for m in machines:
        out.append(f"  {m['ip']:<{width}}  {m['node_type']:<12} {m['state']:<11} "
                   f"since {_ago(m['since'], now)}")
        if m["reason"]:
            out.append(f"      why: {m['reason']}")
        if m["failures"]:
            retry = (f", next attempt {_in(m['next_attempt_at'], now)}"
                     if m["next_attempt_at"] > now else "")
            out.append(f"      failures in a row: {m['failures']}{retry}")
        if m["last_error"]:
            out.append("      last error:")
            out.append(_indent(m["last_error"], "        "))
    out.append("")
    out.append("Playbook runs under way:" if status["running"] else "Playbook runs under way: none")
    for run in status["running"]:
        out.append(f"  {run['request_id']}: {run['kind']} {', '.join(run['ips'])}, started "
                   f"{_ago(run['started'], now)}")
    if status["recent_runs"]:
        out.append("Latest runs:")
        for run in status["recent_runs"]:
            hosts = ", ".join(f"{ip} {outcome}" for ip, outcome in sorted(run["hosts"].items()))
            out.append(f"  {run['request_id']}: {run['kind']} {run['outcome']}"
                       f" ({hosts or 'no host result'}), ended {_ago(run['finished'], now)}")
    out.append("")
    last = status["last_iteration"]
    if last is None:
        out.append("Last iteration: none recorded (is the agent running?)")
    else:
        ray = f"Ray unavailable: {last['ray_error']}" if last["ray_error"] else "Ray answered"
        out.append(f"Last iteration: {_ago(last['time'], now)}, {ray}")
    nxt = status["next"]
    if nxt is not None:
        out.append("Pending demand:")
        out.extend(_demand_lines(nxt.get("demand")))
        decision = nxt.get("decision") or {}
        if status["next_is_fresh"]:
            out.append("Next actions (decided now; nothing is done by status):")
        else:
            age = _span(max(0.0, now - (nxt.get("time") or now)))
            out.append(f"Actions of the last iteration ({age} ago; Ray was not asked now):")
        actions = decision.get("actions") or []
        out.extend(f"  {a['kind']} {', '.join(a['ips'])}: {a['reason']}" for a in actions)
        if not actions:
            out.append("  none")
        for item in decision.get("infeasible") or []:
            out.append(f"  infeasible: {item['count']} x {item['demand']}: {item['reason']}")
        for note in (decision.get("notes") or []) + (nxt.get("held") or []):
            out.append(f"  note: {note}")
    return "\n".join(out) + "\n"
