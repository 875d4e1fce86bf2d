"""Policy 5, cancel joins nobody needs any more: an add run still running whose machines no
demand of this iteration needs, for `cancel_join_after_s` in a row, is canceled.

The machines still needed are what scale-up would add if the joining ones were spare again
(free to be chosen or not): min_workers of each type and of the cluster, request_resources(),
placement groups and pending tasks, within max_workers. Per node type, that many joining
machines are needed, the oldest joins first (the nearest to done). Conservative: a run is
canceled only when every one of its machines is joining and none is needed; never while its
type or the cluster is below min_workers without the joining machines; never for a type
whose resources are not known yet, nor one this decision adds machines of. The run's
machines are left as they are here: its end (canceled) makes them canceled, then retired.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from onprem_ray_agent.model import ActionKind, Machine, MachineState, ip_sort_key, is_claim
from onprem_ray_agent.policy.context import Context, seconds
from onprem_ray_agent.policy.scale_up import machines_needed

S = MachineState


def cancel_joins(ctx: Context) -> None:
    runs = _running_joins(ctx)
    if not runs:
        return
    needed = _needed(ctx, runs)
    limit = ctx.config.cancel_join_after_s
    for run_id, machines in runs.items():
        if any(m.ip in needed for m in machines):
            continue
        since = ctx.unneeded_before.get(run_id, ctx.now)
        ctx.unneeded_since[run_id] = since
        ips = [m.ip for m in machines]
        gone = (f"no demand needs {', '.join(ips)} (add run {run_id}) for "
                f"{seconds(ctx.now - since)}")
        if ctx.now - since >= limit:
            ctx.cancel(run_id, machines[0].node_type, ips,
                       f"{gone}, since {since:.0f} (cancel_join_after_s {limit:g}): cancel "
                       "the run; Ray is then stopped there and the machines are spare")
        else:
            ctx.notes.append(f"{gone}: canceled after cancel_join_after_s {limit:g} unless "
                             "demand returns")


def _running_joins(ctx: Context) -> dict[str, list[Machine]]:
    """Add runs still running, by request id, whose machines are all joining, of one node
    type, and stay in the pool (a run whose machine joined, failed or leaves is left to end
    by itself). Machines `up` claimed have no run: `up` starts them, nothing is canceled."""
    runs: dict[str, list[Machine]] = {}
    for ip in sorted(ctx.current, key=ip_sort_key):
        machine = ctx.current[ip]
        if machine.request_id and not is_claim(machine.request_id) and (
                ctx.running_adds is None
                                   or machine.request_id in ctx.running_adds):
            runs.setdefault(machine.request_id, []).append(machine)
    return {run_id: machines for run_id, machines in runs.items()
            if all(m.state == S.JOINING and m.ip not in ctx.leaving
                   and m.node_type == machines[0].node_type for m in machines)}


def _needed(ctx: Context, runs: dict[str, list[Machine]]) -> set[str]:
    """The joining machines of `runs` that the demand still needs."""
    joining = {m.ip for machines in runs.values() for m in machines}
    protected = _protected_types(ctx, joining)
    # What scale-up would add with these machines spare again, on a copy of the context.
    shadow = dataclasses.replace(
        ctx, notes=[], infeasible=[], _actions={}, _members=None, _run_ids={},
        current={ip: (dataclasses.replace(m, state=S.SPARE) if ip in joining else m)
                 for ip, m in ctx.current.items()})
    wanted = Counter(machines_needed(shadow))
    needed: set[str] = set()
    oldest_first = sorted(runs.values(), key=lambda ms: (min(m.since for m in ms),
                                                         ms[0].request_id))
    for machines in oldest_first:
        for machine in machines:
            if machine.node_type in protected or wanted[machine.node_type] > 0:
                wanted[machine.node_type] -= 1
                needed.add(machine.ip)
    return needed


def _protected_types(ctx: Context, joining: set[str]) -> set[str]:
    """Node types none of whose joins may be canceled: below min_workers without them (all
    types, when the cluster is), resources unknown, or machines added by this decision."""
    config = ctx.config
    names = {t.name for t in config.node_types}
    retiring = ctx.ips_of(ActionKind.RETIRE)  # scale-down's retirements leave `current` as is
    running = Counter(m.node_type for ip, m in ctx.current.items()
                      if m.state == S.ACTIVE and ip not in ctx.leaving and ip not in joining
                      and ip not in retiring)
    if sum(running.values()) < config.min_workers:
        return names
    protected = {t.name for t in config.node_types
                 if running[t.name] < t.effective_min or not _resources_known(ctx, t.name)}
    protected |= ctx.node_types_of(ActionKind.ADD)
    return protected


def _resources_known(ctx: Context, name: str) -> bool:
    node_type = ctx.config.node_type(name)
    if node_type is not None and node_type.resources:
        return True
    if ctx.config.head_node_type == name and ctx.head_alive:
        return True
    return any(m.node_type == name and ip in ctx.alive for ip, m in ctx.current.items())
