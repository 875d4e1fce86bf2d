"""Policy 2, follow the inventory: new IPs become spare (joining, when `up` claims them); an
IP removed (or moved to another node type) is forgotten when nothing runs there, else drained
and retired first."""

from __future__ import annotations

from onprem_ray_agent import transitions
from onprem_ray_agent.model import ActionKind, Event, MachineState, ip_sort_key
from onprem_ray_agent.policy.claims import apply_claim, joined_reason
from onprem_ray_agent.policy.context import Context, Phase

S = MachineState


def follow_inventory(ctx: Context) -> None:
    for ip in sorted(ctx.records, key=ip_sort_key):
        machine = ctx.current[ip]
        wanted = ctx.inventory.get(ip)
        if wanted == machine.node_type:
            continue
        why = ("removed from the inventory" if wanted is None
               else f"node type changed from {machine.node_type} to {wanted}")
        # A new node type must not wipe a backoff or a quarantine: only a spare is
        # re-admitted under its new type; a removed IP is forgotten whatever its past.
        forgettable = (S.SPARE,) if wanted else (S.SPARE, S.FAILED, S.QUARANTINED)
        if machine.state in forgettable:
            del ctx.current[ip]
            ctx.act(Phase.FORGET, ActionKind.FORGET, Event.REMOVED_FROM_INVENTORY,
                    machine.node_type, ip, why)
            continue
        # An address that left the inventory is acted on only while Ray lists it as a node of
        # this cluster: a record alone (a crafted or stale store) never sends a run anywhere.
        if wanted is None and ip not in ctx.alive and machine.state == S.ACTIVE:
            ctx.notes.append(f"{ip} {why}; not ALIVE in Ray: retired once Ray lists it")
            continue
        ctx.leaving.add(ip)
        if machine.state == S.ACTIVE and ctx.head_alive:
            ctx.current[ip] = transitions.apply(machine, Event.DRAIN_REQUESTED, ctx.now,
                                                reason=why)
            ctx.act(Phase.RETIRE, ActionKind.RETIRE, Event.DRAIN_REQUESTED,
                    machine.node_type, ip, f"{why}: drain and retire {ip}")
        else:
            ctx.notes.append(f"{ip} {why}; waiting while it is {machine.state.value}")
    for ip in sorted(ctx.inventory, key=ip_sort_key):
        if ip in ctx.current:
            continue
        node_type = ctx.inventory[ip]
        ctx.current[ip] = transitions.admit(ip, node_type, ctx.now)
        ctx.act(Phase.ADMIT, ActionKind.ADMIT, Event.ADMITTED, node_type, ip,
                "added to the inventory")
        # `up` claims the workers it starts before the agent first records them.
        machine = apply_claim(ctx, ctx.current[ip], Phase.CLAIM_ADMITTED)
        if ip in ctx.alive:
            ctx.mark(machine, Event.JOINED,
                     joined_reason(machine) if machine.state == S.JOINING
                     else "already ALIVE in Ray when added to the inventory",
                     Phase.MARK_ADMITTED)
