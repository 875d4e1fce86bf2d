"""`up`'s claim: the workers `up` starts Ray on itself, told to the agent before it does.

A claimed machine is recorded joining with the claim's id and no run, so the agent never adds
it (nor another machine for the demand it will serve); observe then records it joined when Ray
lists it ALIVE ("seen ALIVE in Ray", not adopted), or spare again when it is not ALIVE within
provision_timeout_s of the claim (`up` stopped first: no failure is counted).

A claim holds each machine once: for a machine not recorded yet (the agent's first start,
during the first `up`), recorded before the claim was written and not changed since, or
recorded after it by no run (a store rebuilt from Ray while `up` runs). A record that names
the claim (joining under it, joined, released) or that a run or another claim changed after
it (e.g. joined and retired again) has spent it: the claim file stays while `up` runs, and is
read every iteration. A machine in an agent's add or retire run stays the run's (`up` waits
for those runs to end before it claims).

While the claim is open (`up` has not ended it) and younger than provision_timeout_s, the
active machines it names are not retired as idle (`Context.held_by_up`): `up` may still be
waiting for them. Once ended, the usual rules apply at once.

`up` ends its claim as its last task; one that ends without bringing some of its claimed
workers ALIVE (they failed a step, or its wait) releases them there: a released machine
joining under that claim is spare again at once, with no failure counted (`up` reports that
failure), unless Ray lists it ALIVE (then it joins as started by up); one the claim has not
made joining yet is never claimed.
"""

from __future__ import annotations

from onprem_ray_agent import transitions
from onprem_ray_agent.model import Claim, Event, Machine, MachineState, is_claim
from onprem_ray_agent.policy.context import Context, Phase

S = MachineState


def apply_claim(ctx: Context, machine: Machine, phase: Phase = Phase.CLAIM) -> Machine:
    """`machine` after `up`'s claim: joining under the claim, or as it was."""
    claim = ctx.claim
    if claim is None or machine.ip not in ctx.inventory:
        return machine
    if machine.ip in claim.released:
        return _release(ctx, machine, phase)
    if machine.ip not in claim.ips:
        return machine
    record = ctx.records.get(machine.ip)
    if record is not None and spent(claim, record):
        return machine
    if machine.state == S.JOINING and not is_claim(machine.request_id):
        ctx.notes.append(f"{machine.ip}: claimed by up ({claim.claim_id}) while the agent's "
                         f"add run {machine.request_id} has it: left to the run")
        return machine
    if (machine.state, Event.CLAIMED) not in transitions.TRANSITIONS:
        if machine.state != S.ACTIVE:
            ctx.notes.append(f"{machine.ip}: claimed by up ({claim.claim_id}) while "
                             f"{machine.state.value}: left as it is")
        return machine
    ctx.mark(machine, Event.CLAIMED,
             f"Ray started by up (claim {claim.claim_id}): joining, not added by the agent",
             phase, request_id=claim.claim_id)
    return ctx.current[machine.ip]


def spent(claim: Claim, record: Machine) -> bool:
    """Whether `claim` has had its turn at `record`: applied already (the record names it),
    or the record changed after the claim through a run or another claim. A record made after
    it by no run (a store rebuilt from Ray, no request id) has not: `up` still starts Ray
    there."""
    if record.request_id == claim.claim_id:
        return True
    return record.since > claim.at and bool(record.request_id)


def _release(ctx: Context, machine: Machine, phase: Phase) -> Machine:
    """`machine` after `up` released it: spare again if this claim holds it and Ray does not
    list it ALIVE; else as it was (observe joins an ALIVE one as started by up)."""
    claim_id = ctx.claim.claim_id if ctx.claim is not None else ""
    if machine.state != S.JOINING or machine.request_id != claim_id or machine.ip in ctx.alive:
        return machine
    ctx.mark(machine, Event.CLAIM_RELEASED,
             f"up (claim {claim_id}) ended without it ALIVE in Ray: spare again, no failure "
             "counted (up reports what failed there)", phase)
    return ctx.current[machine.ip]


def joined_reason(machine: Machine) -> str:
    """Why a joining machine Ray lists ALIVE is active: an add's, or `up`'s start."""
    if is_claim(machine.request_id):
        return f"seen ALIVE in Ray (started by up, claim {machine.request_id})"
    return "seen ALIVE in Ray"
