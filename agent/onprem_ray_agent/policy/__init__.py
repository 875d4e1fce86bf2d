"""The decision: (config, machines, Ray's demand, now) -> actions, each with its reason.

Pure: no I/O, no clock, no randomness; the same input always gives the same decision. One call
is one iteration of the loop, a list of policies over one explicit `Context`, in the order of
Ray autoscaler v2's `ResourceDemandScheduler.schedule`:

1. observe (`observe.py`): machines `up` claims are joining (`claims.py`), machines seen
   ALIVE join, joins that take too long fail, active machines Ray reports DEAD or has not
   listed for provision_timeout_s (the head ALIVE) are lost, failed machines whose backoff
   elapsed become spare (or are quarantined), drains past their deadline fail;
2. follow the inventory (`inventory.py`): new IPs become spare, removed ones are forgotten or
   retired first;
3. scale up (`scale_up.py`): place the demand as Ray's scheduler scores it, on the nodes there
   are, then on new machines of the types that fit it (labels included), within min/max
   workers; then limit the launches (upscaling_speed, concurrency);
4. scale down (`scale_down.py`): retire above max_workers, then machines idle longer than
   their type's timeout that host no demand, never below min_workers;
5. cancel joins nobody needs any more (`cancel_joins.py`): an add run still running whose
   machines no demand has needed for cancel_join_after_s is canceled.

Nothing here ever acts on the head or on an IP outside the pool.
"""

from __future__ import annotations

import gc
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager

from onprem_ray_agent.model import Claim, Config, Decision, DemandSnapshot, Machine
from onprem_ray_agent.policy.cancel_joins import cancel_joins
from onprem_ray_agent.policy.context import OCCUPYING, WORKING, Context, request_id
from onprem_ray_agent.policy.inventory import follow_inventory
from onprem_ray_agent.policy.observe import observe
from onprem_ray_agent.policy.scale_down import scale_down
from onprem_ray_agent.policy.scale_up import MAX_EXACT_SHAPES, scale_up

__all__ = ["MAX_EXACT_SHAPES", "OCCUPYING", "WORKING", "Decision", "decide", "request_id"]


def decide(config: Config, machines: Iterable[Machine], snapshot: DemandSnapshot,
           now: float, *, running_adds: Collection[str] | None = None,
           unneeded_since: Mapping[str, float] | None = None,
           claim: Claim | None = None,
           absent_since: Mapping[str, float] | None = None) -> Decision:
    """What to do at `now`, given the pool's records and Ray's demand. `running_adds`: the
    request ids of the add runs still running (None: every joining machine's);
    `unneeded_since`: the last decision's `Decision.unneeded_since`; `claim`: the workers
    `up` starts itself (policy/claims.py); `absent_since`: the last decision's
    `Decision.absent_since`."""
    with _cyclic_gc_paused():
        return _decide(config, machines, snapshot, now, running_adds, unneeded_since, claim,
                       absent_since)


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """A large decision makes some 100,000 short-lived objects, freed by reference counting
    (they form no cycles); the collections they would trigger each walk the whole snapshot
    and cost about a fifth of the time at 1,000 machines. It runs as usual again after."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _decide(config: Config, machines: Iterable[Machine], snapshot: DemandSnapshot, now: float,
            running_adds: Collection[str] | None, unneeded_since: Mapping[str, float] | None,
            claim: Claim | None, absent_since: Mapping[str, float] | None) -> Decision:
    ctx = Context.build(config, machines, snapshot, now, running_adds, unneeded_since, claim,
                        absent_since)
    observe(ctx)
    follow_inventory(ctx)
    if ctx.head_alive:
        hosted = scale_up(ctx)
        scale_down(ctx, hosted)
        cancel_joins(ctx)
    else:
        ctx.notes.append(f"the head {ctx.head} is not ALIVE in Ray: no scaling this iteration "
                         "(as Ray's Reconciler waits for the head node)")
    return ctx.decision()
