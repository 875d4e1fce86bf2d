"""Policy 1, observe: what Ray and the clock say about each recorded machine. `up`'s claim
makes the machines it starts joining first (claims.py). Machines seen ALIVE join, joins that
take too long fail (a claimed machine is spare again instead: `up` stopped before starting
Ray there), active machines Ray reports DEAD, or has not listed for provision_timeout_s while
the head is ALIVE, are lost, failed machines whose backoff elapsed become spare (or are
quarantined), drains past their deadline fail, machines whose add was canceled are retired
(whatever the add started there is stopped) before they are spare."""

from __future__ import annotations

from onprem_ray_agent import transitions
from onprem_ray_agent.model import ActionKind, Event, Machine, MachineState, ip_sort_key, is_claim
from onprem_ray_agent.policy.claims import apply_claim, joined_reason
from onprem_ray_agent.policy.context import Context, Phase, plural, seconds, utc

S = MachineState


def observe(ctx: Context) -> None:
    for ip in sorted(ctx.records, key=ip_sort_key):
        machine = ctx.records[ip]
        ctx.current[ip] = machine
        _observe_one(ctx, apply_claim(ctx, machine))


def _absent(ctx: Context, machine: Machine) -> None:
    """An active machine Ray does not list, while the head is ALIVE. After a restart of the
    head's Ray the GCS starts empty and the workers register again within seconds; one that
    died meanwhile never does, and the new GCS never reports it DEAD either. It is waited for
    as long as a machine may take to come up (provision_timeout_s), counted from the first
    decision that found it absent with the head ALIVE, then lost."""
    config, now = ctx.config, ctx.now
    since = ctx.absent_before.get(machine.ip, now)
    absent_s = now - since
    limit = config.provision_timeout_s
    if absent_s > limit:
        ctx.mark(machine, Event.LOST,
                 f"not in Ray's node list for {seconds(absent_s)} since {utc(since)} "
                 f"(provision_timeout_s {limit:g}): its Ray did not register again (after a "
                 "restart of the head's Ray its node would have); lost")
        return
    ctx.absent_since[machine.ip] = since
    ctx.notes.append(f"{machine.ip} is active but not in Ray's node list yet: waiting for it "
                     f"to register (absent {seconds(absent_s)}; lost after "
                     f"provision_timeout_s {limit:g})")


def _observe_one(ctx: Context, machine: Machine) -> None:
    config, now = ctx.config, ctx.now
    alive = machine.ip in ctx.alive
    state = machine.state
    if alive and state == S.JOINING:
        ctx.mark(machine, Event.JOINED, joined_reason(machine))
    elif alive and state in (S.SPARE, S.FAILED, S.QUARANTINED):
        # e.g. an add that failed (the network cut mid-add) whose Ray came up after all
        ctx.mark(machine, Event.JOINED,
                 f"found ALIVE in Ray while recorded {state.value}: adopted")
    elif state == S.JOINING and now - machine.since > config.provision_timeout_s \
            and is_claim(machine.request_id):
        ctx.mark(machine, Event.CLAIM_EXPIRED,
                 f"started by up (claim {machine.request_id}) but not ALIVE in Ray "
                 f"{seconds(now - machine.since)} later (provision_timeout_s "
                 f"{config.provision_timeout_s:g}): spare again, no failure counted (up may "
                 "have stopped before it started Ray there)")
    elif state == S.JOINING and now - machine.since > config.provision_timeout_s:
        ctx.mark(machine, Event.PROVISION_TIMEOUT,
                 f"not ALIVE in Ray {seconds(now - machine.since)} after the add "
                 f"(provision_timeout_s {config.provision_timeout_s:g})")
    elif state == S.ACTIVE and not alive and ctx.head_alive:
        if machine.ip in ctx.dead:
            ctx.mark(machine, Event.LOST, "Ray reports its node DEAD")
        else:
            _absent(ctx, machine)
    elif state == S.FAILED:
        limit = config.quarantine_after_failures
        if limit and machine.failures >= limit:
            last = f"; last error: {machine.last_error}" if machine.last_error else ""
            ctx.mark(machine, Event.QUARANTINE,
                     f"{machine.failures} consecutive failures{last}")
        elif now >= machine.next_attempt_at:
            ctx.mark(machine, Event.BACKOFF_ELAPSED,
                     f"backoff after {plural(machine.failures, 'failure')} elapsed")
    elif state == S.DRAINING and now - machine.since > config.drain_deadline_s:
        ctx.mark(machine, Event.DRAIN_FAILED,
                 f"not drained within drain_deadline_s {config.drain_deadline_s:g}")
    elif state == S.CANCELED and ctx.head_alive:
        # retire_workers drains it if Ray lists it, then stops Ray there if it was set up
        # (one reason for the machines of one run: they retire in one run too)
        reason = (f"its add was canceled (run {machine.request_id}): retire, to stop what "
                  "the add started there")
        ctx.current[machine.ip] = transitions.apply(machine, Event.DRAIN_REQUESTED, now,
                                                    reason=reason)
        ctx.act(Phase.RETIRE, ActionKind.RETIRE, Event.DRAIN_REQUESTED, machine.node_type,
                machine.ip, reason)
    elif state == S.CANCELED:
        ctx.notes.append(f"{machine.ip}: its add was canceled; retired once the head is "
                         "ALIVE in Ray")
