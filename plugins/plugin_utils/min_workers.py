# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE)
"""Which workers start for min_workers: one pure function for `up` and the agent alike.

Ray's semantics: each node type's min_workers first (capped by its max_workers), then the
cluster's min_workers, taken from node types without GPUs first (GPU machines are kept for work
that asks for them), then in configuration order; never beyond a type's or the cluster's
max_workers, nor beyond the machines that may start.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple


class NodeTypeSlots(NamedTuple):
    """One node type as the choice sees it."""

    name: str
    min_workers: int
    max_workers: int  # the type's limit (its machine count when the file sets none)
    spare: tuple[str, ...]  # machines that may start, the preferred first
    gpu: bool = False  # machines offer GPUs: started for the cluster's min_workers last
    working: int = 0  # machines that already count toward min_workers
    occupied: int | None = None  # machines that take a max_workers slot (None: `working`)


class MinWorkersChoice(NamedTuple):
    for_node_types: tuple[tuple[str, str], ...]  # (node type, machine): a type's min_workers
    for_cluster: tuple[tuple[str, str], ...]  # (node type, machine): the cluster's min_workers
    node_type_shortfall: dict[str, int]  # machines missing for a type's min_workers
    cluster_shortfall: int  # machines missing for the cluster's min_workers

    @property
    def machines(self) -> list[str]:
        return [machine for _type, machine in self.for_node_types + self.for_cluster]


def choose_min_workers(node_types: Sequence[NodeTypeSlots], min_workers: int,
                       max_workers: int | None = None) -> MinWorkersChoice:
    """The machines to start so that every node type, then the cluster, has its min_workers.

    `node_types` in configuration order; `max_workers` is the cluster's (None: no limit).
    """
    occupied = {t.name: t.working if t.occupied is None else t.occupied for t in node_types}
    global_room = math.inf if max_workers is None else max_workers - sum(occupied.values())
    opened: dict[str, list[str]] = {t.name: [] for t in node_types}

    def open_(node_type: NodeTypeSlots, count: int) -> list[str]:
        taken = opened[node_type.name]
        total = sum(len(machines) for machines in opened.values())
        room = min(len(node_type.spare) - len(taken),
                   node_type.max_workers - occupied[node_type.name] - len(taken),
                   global_room - total)
        new = list(node_type.spare[len(taken):len(taken) + max(0, min(count, int(room)))])
        taken.extend(new)
        return new

    for_types: list[tuple[str, str]] = []
    shortfall: dict[str, int] = {}
    for node_type in node_types:
        need = min(node_type.min_workers, node_type.max_workers) - node_type.working
        if need <= 0:
            continue
        started = open_(node_type, need)
        for_types += [(node_type.name, machine) for machine in started]
        if len(started) < need:
            shortfall[node_type.name] = need - len(started)

    need = min_workers - sum(t.working for t in node_types) - len(for_types)
    for_cluster: list[tuple[str, str]] = []
    order = sorted(range(len(node_types)), key=lambda index: (node_types[index].gpu, index))
    for index in order:
        if need <= 0:
            break
        started = open_(node_types[index], need)
        for_cluster += [(node_types[index].name, machine) for machine in started]
        need -= len(started)
    return MinWorkersChoice(tuple(for_types), tuple(for_cluster), shortfall, max(0, need))
