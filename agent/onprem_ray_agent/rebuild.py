"""`run --rebuild-state`: a new state store from Ray and the inventory, for a damaged one.

Every worker of the inventory gets a record: active when Ray lists it ALIVE, spare otherwise,
so no machine is lost or leaked (a spare that Ray lists later is adopted as usual). What only
the old store knew is lost: failure counts, backoffs and quarantines (a quarantined machine is
a spare again), last errors, and the history of playbook runs. The old file is moved aside,
never deleted. Ray must answer: without it, running workers cannot be told from spares.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onprem_ray_agent.adapters.ray_state import RayUnavailable
from onprem_ray_agent.loop import RayState
from onprem_ray_agent.model import Config, Machine, MachineState, RayNodeState, ip_sort_key
from onprem_ray_agent.store import StateStore, StoreError

log = logging.getLogger("onprem_ray_agent")

REASON_ACTIVE = "rebuilt from Ray and the inventory (--rebuild-state): ALIVE in Ray"
REASON_SPARE = "rebuilt from Ray and the inventory (--rebuild-state): not ALIVE in Ray"


@dataclass(frozen=True)
class Rebuilt:
    machines: tuple[Machine, ...]
    moved_to: Path | None  # where the old store went; None if there was none
    outside: tuple[str, ...]  # ALIVE in Ray, neither the head nor in the inventory




def records_from(config: Config, snapshot: Any, now: float,
                 ) -> tuple[tuple[Machine, ...], tuple[str, ...]]:
    """The records of a rebuilt store, and the workers Ray lists that the inventory lacks."""
    alive = {node.ip for node in snapshot.nodes if node.state == RayNodeState.ALIVE}
    machines = []
    pool = set()
    for node_type in config.node_types:
        for ip in node_type.ips:
            if ip == config.head_ip:
                continue
            pool.add(ip)
            active = ip in alive
            machines.append(Machine(
                ip=ip, node_type=node_type.name,
                state=MachineState.ACTIVE if active else MachineState.SPARE, since=now,
                reason=REASON_ACTIVE if active else REASON_SPARE))
    outside = sorted(alive - pool - {config.head_ip}, key=ip_sort_key)
    return tuple(sorted(machines, key=lambda m: ip_sort_key(m.ip))), tuple(outside)


def rebuild_state(path: Path, config: Config, ray: RayState, now: float) -> Rebuilt:
    """Ask Ray first (nothing is touched if it does not answer), then replace the store."""
    machines, outside = records_from(config, ray.snapshot(), now)
    store, moved = StateStore.replace(path)
    try:
        store.put(*machines)
    finally:
        store.close()
    return Rebuilt(machines=machines, moved_to=moved, outside=outside)


def rebuild_command(path: Path, config: Config, ray: RayState,
                    echo: Callable[[str], None] = print) -> int:
    """The `--rebuild-state` command: 0 when rebuilt, 3 when nothing was changed."""
    try:
        rebuilt = rebuild_state(path, config, ray, time.time())
    except RayUnavailable as err:
        log.error("state store %s not rebuilt, nothing changed: Ray must answer to tell running "
                  "workers from spares: %s; start the head's Ray, then try again", path, err)
        return 3
    except StoreError as err:
        log.error("state store %s not rebuilt: %s", path, err)
        return 3
    if rebuilt.moved_to is not None:
        echo(f"the previous state store was moved to {rebuilt.moved_to}")
    counts = {state: sum(1 for m in rebuilt.machines if m.state == state)
              for state in (MachineState.ACTIVE, MachineState.SPARE)}
    echo(f"state store {path} rebuilt: {counts[MachineState.ACTIVE]} active (ALIVE in Ray), "
         f"{counts[MachineState.SPARE]} spare; failure counts, backoffs, quarantines and "
         "the history of runs are forgotten")
    for machine in rebuilt.machines:
        echo(f"  {machine.ip}  {machine.node_type}  {machine.state.value}")
    for ip in rebuilt.outside:
        echo(f"warning: {ip} is ALIVE in Ray but not in the inventory: not recorded, so the "
             "agent will not retire it; add it back to the inventory, or stop Ray on it")
    return 0
