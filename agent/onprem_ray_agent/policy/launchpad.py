"""The machines a plan may add: the spare ones of each node type, within max_workers; what a
machine of each type offers; and, when none may be added, why."""

from __future__ import annotations

import math
from collections import Counter

from onprem_ray_agent.model import Machine, MachineState, Resources, ip_sort_key, launch_preference
from onprem_ray_agent.packing import Placer, SimNode, Template
from onprem_ray_agent.policy.context import OCCUPYING, Context, seconds

S = MachineState


class Launchpad:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        config = ctx.config
        self.occupied = Counter(m.node_type for m in ctx.current.values()
                                if m.state in OCCUPYING)
        self.global_room = (math.inf if config.max_workers is None
                            else config.max_workers - sum(self.occupied.values()))
        self.candidates: dict[str, list[Machine]] = {}
        for node_type in config.node_types:
            spare = [m for m in ctx.members(node_type.name) if m.state == S.SPARE]
            self.candidates[node_type.name] = sorted(spare, key=launch_preference)
        self.opened: dict[str, list[SimNode]] = {t.name: [] for t in config.node_types}
        self.total_opened = 0
        self.placers: list[Placer] = []
        self.resources = self._type_resources()
        self.templates = [
            Template(t.name, self.resources[t.name] or {}, dict(t.labels), index)
            for index, t in enumerate(config.node_types) if self.resources[t.name]]
        self._state_text: dict[str, str] = {}

    def _type_resources(self) -> dict[str, Resources | None]:
        """Declared resources, else those of a machine of the type seen ALIVE: as Ray's
        `_update_node_resources_from_runtime` learns types without declared resources."""
        ctx = self.ctx
        learned: dict[str, Resources] = {}
        for ip in sorted(ctx.alive, key=ip_sort_key):
            machine = ctx.current.get(ip)
            if machine is not None and machine.node_type not in learned:
                learned[machine.node_type] = ctx.alive[ip].total
        # The head is a machine of its type too (Ray's local provider: one type for all), so a
        # pool whose workers are all stopped still knows what a worker offers.
        head_type = ctx.config.head_node_type
        if head_type and head_type not in learned and ctx.head_alive:
            learned[head_type] = ctx.alive[ctx.head].total
        return {t.name: (dict(t.resources) if t.resources else learned.get(t.name))
                for t in ctx.config.node_types}

    def room(self, name: str, reserved: int = 0, reserved_total: int = 0) -> int:
        """How many more machines of type `name` may be added, `reserved` of it (and
        `reserved_total` of all types) being spoken for already."""
        node_type = self.ctx.config.node_type(name)
        if node_type is None:
            return 0
        opened = len(self.opened[name]) + reserved
        # Without an explicit max_workers the type's limit is its list of machines, which
        # the spare candidates already are; machines leaving the list take no slot of it.
        type_room = (math.inf if node_type.max_workers is None
                     else node_type.max_workers - self.occupied[name] - opened)
        room = min(len(self.candidates[name]) - opened, type_room,
                   self.global_room - self.total_opened - reserved_total)
        return max(0, int(room))

    def open(self, name: str, count: int) -> list[SimNode]:
        """`count` new machines of type `name` (fewer if there is less room), known to every
        placer with all their resources free."""
        count = min(count, self.room(name))
        node_type = self.ctx.config.node_type(name)
        labels = dict(node_type.labels) if node_type else {}
        resources = self.resources.get(name) or {}
        nodes = [SimNode(SimNode.NEW, name, labels=labels) for _ in range(count)]
        for placer in self.placers:
            for node in nodes:
                placer.add(node, resources, resources)
        self.opened[name].extend(nodes)
        self.total_opened += count
        return nodes

    def blocked(self, name: str, reserved: int = 0, reserved_total: int = 0) -> str:
        """Why no (further) machine of this type can be added."""
        config = self.ctx.config
        node_type = config.node_type(name)
        if node_type is None:
            return f"no node type {name}"
        if self.global_room - self.total_opened - reserved_total <= 0:
            return f"max_workers {config.max_workers} reached"
        opened = len(self.opened[name]) + reserved
        if (node_type.max_workers is not None
                and node_type.max_workers - self.occupied[name] - opened <= 0):
            return f"type {name} is at max_workers {node_type.effective_max}"
        return f"no further spare machine of type {name}{self._states(name)}"

    def _states(self, name: str) -> str:
        """' (2 joining, 1 failed, next retry in 25 s)': the type's machines by state."""
        if name not in self._state_text:
            self._state_text[name] = self._describe_states(name)
        return self._state_text[name]

    def _describe_states(self, name: str) -> str:
        members = self.ctx.members(name)
        states = Counter(m.state for m in members)
        parts = [f"{states[state]} {state.value}" for state in
                 (S.JOINING, S.ACTIVE, S.DRAINING, S.RETIRING, S.FAILED, S.QUARANTINED)
                 if states[state]]
        waiting = [m.next_attempt_at for m in members if m.state == S.FAILED]
        if waiting:
            parts.append(f"next retry in {seconds(max(0.0, min(waiting) - self.ctx.now))}")
        return f" ({', '.join(parts)})" if parts else ""
