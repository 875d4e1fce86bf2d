"""Policy 4, scale down: retire above max_workers, then machines idle past their type's
timeout that host no demand, never below min_workers. A machine's idle time is Ray's idle
duration, at most the time since the agent first saw it ALIVE (`Context.idle_s`): Ray counts
from its start there, so a worker `up` started minutes before it registered is not idle yet.
A worker `up`'s open claim names is not retired as idle until `up` ends the claim (at most
provision_timeout_s after it, `Context.held_by_up`): `up` may still be waiting for it."""

from __future__ import annotations

from collections.abc import Mapping

from onprem_ray_agent.model import ActionKind, Event, Machine, MachineState, RayNode, ip_sort_key
from onprem_ray_agent.packing import SimNode
from onprem_ray_agent.policy.context import Context, Phase, note_list, plural, seconds

S = MachineState


def scale_down(ctx: Context, sim_by_ip: Mapping[str, SimNode]) -> None:
    down = _ScaleDown(ctx, sim_by_ip)
    down.max_workers()
    down.idle()


class _ScaleDown:
    def __init__(self, ctx: Context, sim_by_ip: Mapping[str, SimNode]) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.sim_by_ip = sim_by_ip
        self.retired: set[str] = set()
        self.spared: set[str] = set()  # joining machines counted as the first to go
        self.working = ctx.working()

    def _active(self) -> list[Machine]:
        return [m for ip, m in self.ctx.current.items()
                if m.state == S.ACTIVE and ip not in self.ctx.leaving and ip not in self.retired]

    def _joining(self, node_type: str | None = None) -> list[Machine]:
        return sorted((m for ip, m in self.ctx.current.items()
                       if m.state == S.JOINING and ip not in self.ctx.leaving
                       and node_type in (None, m.node_type)),
                      key=lambda m: ip_sort_key(m.ip))

    def _termination_order(self, machine: Machine) -> tuple:
        # Ray v2 _sort_nodes_for_termination: longest idle first, then least used.
        node = self.ctx.alive.get(machine.ip)
        return (-self.ctx.idle_s(machine), _utilization(node), ip_sort_key(machine.ip))

    def _retire(self, machines: list[Machine], event: Event, reason: str,
                node_type: str) -> None:
        if not machines:
            return
        ips = [m.ip for m in machines]
        self.retired.update(ips)
        self.ctx.act(Phase.RETIRE, ActionKind.RETIRE, event, node_type, ips,
                     f"{reason}: retire {', '.join(ips)}")

    def _spare_joins(self, node_type: str | None, over: int, limit: str) -> list[Machine]:
        """Ray v2 terminates machines that do not run Ray yet first. A join under way is not
        cut short here (its playbook may be half done): it takes its share of the excess,
        said in a note, and retires once it has joined, rather than a busy node now.
        Returns the joining machines that took a share."""
        joining = [m for m in self._joining(node_type) if m.ip not in self.spared]
        count = min(over, len(joining))
        if count:
            ips = [m.ip for m in joining[:count]]
            self.spared.update(ips)
            self.ctx.notes.append(
                f"{', '.join(ips)} {'is' if count == 1 else 'are'} joining above {limit}: "
                f"{'it retires' if count == 1 else 'they retire'} once joined, and no busy "
                "node is drained for it")
        return joining[:count]

    def max_workers(self) -> None:
        # Ray v2 _enforce_max_workers_per_type / _enforce_max_workers_global: above the
        # limit, machines not running Ray yet go first, then nodes in termination order
        # (the longest idle first, busy ones last).
        for node_type in self.config.node_types:
            name = node_type.name
            working = self.working.get(name, 0)
            over = working - node_type.effective_max
            if over <= 0:
                continue
            spared = len(self._spare_joins(name, over, f"max_workers "
                                           f"{node_type.effective_max} of type {name}"))
            active = sorted((m for m in self._active() if m.node_type == name),
                            key=self._termination_order)
            chosen = active[:over - spared]
            self._retire(chosen, Event.DRAIN_REQUESTED,
                         f"type {name} has {plural(working, 'worker')}, "
                         f"max_workers {node_type.effective_max}", name)
            self.working[name] = working - spared - len(chosen)
        if self.config.max_workers is None:
            return
        total = sum(self.working.values())
        over = total - self.config.max_workers
        if over <= 0:
            return
        spared = self._spare_joins(None, over, f"max_workers {self.config.max_workers}")
        for machine in spared:
            self.working[machine.node_type] -= 1
        chosen = sorted(self._active(), key=self._termination_order)[:over - len(spared)]
        for name in dict.fromkeys(m.node_type for m in chosen):
            of_type = [m for m in chosen if m.node_type == name]
            self._retire(of_type, Event.DRAIN_REQUESTED,
                         f"{total} workers, max_workers {self.config.max_workers}", name)
            self.working[name] -= len(of_type)

    def idle(self) -> None:
        # Ray v2 _enforce_idle_termination: idle strictly longer than the timeout (the node
        # type's idle_timeout_s, else the cluster's), not needed by pending demand or
        # request_resources(), never below min_workers; the longest idle go first.
        idle: list[Machine] = []
        kept_for_demand: list[str] = []
        kept_for_up: list[str] = []
        kept_for_min: dict[str, list[str]] = {}
        idle_s = {}
        for machine in self._active():
            if machine.ip not in self.ctx.alive:
                continue
            idle_s[machine.ip] = self.ctx.idle_s(machine)
            if idle_s[machine.ip] <= self.config.idle_timeout_of(machine.node_type):
                continue
            if self.ctx.held_by_up(machine):
                kept_for_up.append(f"{machine.ip} idle {seconds(idle_s[machine.ip])}")
                continue
            sim = self.sim_by_ip.get(machine.ip)
            if sim is not None and sim.hosts_demand:
                kept_for_demand.append(f"{machine.ip} idle {seconds(idle_s[machine.ip])}")
                continue
            idle.append(machine)
        note_list(self.ctx.notes, kept_for_demand, "kept, as pending demand fits there")
        if kept_for_up and self.ctx.claim is not None:
            note_list(self.ctx.notes, kept_for_up,
                      f"kept, as up started Ray there and has not ended its claim "
                      f"{self.ctx.claim.claim_id} (held until it ends, at most "
                      f"provision_timeout_s {self.config.provision_timeout_s:g} after it)")
        idle.sort(key=self._termination_order)
        chosen: dict[str, list[Machine]] = {}
        for machine in idle:
            node_type = self.config.node_type(machine.node_type)
            floor = node_type.effective_min if node_type else 0
            seen = f"{machine.ip} idle {seconds(idle_s[machine.ip])}"
            if self.working.get(machine.node_type, 0) <= floor:
                why = f"kept, as type {machine.node_type} is at min_workers {floor}"
                kept_for_min.setdefault(why, []).append(seen)
                continue
            if sum(self.working.values()) <= self.config.min_workers:
                why = f"kept, as the cluster is at min_workers {self.config.min_workers}"
                kept_for_min.setdefault(why, []).append(seen)
                continue
            self.working[machine.node_type] -= 1
            chosen.setdefault(machine.node_type, []).append(machine)
        for why, seen in kept_for_min.items():
            note_list(self.ctx.notes, seen, why)
        for name, machines in chosen.items():
            detail = ", ".join(f"{m.ip} {seconds(idle_s[m.ip])}"
                               for m in machines)
            node_type = self.config.node_type(name)
            timeout = (f"idle_timeout_s {node_type.idle_timeout_s:g} of type {name}"
                       if node_type is not None and node_type.idle_timeout_s is not None
                       else f"idle_timeout_minutes {self.config.idle_timeout_minutes:g}")
            self._retire(machines, Event.IDLE_EXPIRED,
                         f"idle longer than {timeout} ({detail})", name)


def _utilization(node: RayNode | None) -> float:
    if node is None:
        return 0.0
    shares = [(total - node.available.get(name, 0.0)) / total
              for name, total in node.total.items() if total > 0]
    return sum(shares) / len(shares) if shares else 0.0
