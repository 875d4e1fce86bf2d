"""Builders that keep the decision tables short: a pool of typed machines, Ray nodes, demand.

Addresses: the head is 10.0.0.1; machine i of node type cpu is 10.0.1.i, of gpu 10.0.2.i,
of big 10.0.3.i.
"""

from __future__ import annotations

from onprem_ray_agent.model import (
    ActionKind,
    BundleDemand,
    Config,
    Decision,
    DemandSnapshot,
    Machine,
    MachineState,
    NodeType,
    PlacementGroupDemand,
    PlacementStrategy,
    RayNode,
    RayNodeState,
)
from onprem_ray_agent.policy import decide

HEAD = "10.0.0.1"
NOW = 1_000_000.0
SUBNET = {"cpu": 1, "gpu": 2, "big": 3}
RESOURCES = {"cpu": {"CPU": 4}, "gpu": {"CPU": 8, "GPU": 1}, "big": {"CPU": 16}}


def ip(node_type: str, i: int) -> str:
    return f"10.0.{SUBNET[node_type]}.{i}"


def node_type(name: str, count: int = 3, **kwargs) -> NodeType:
    kwargs.setdefault("resources", RESOURCES[name])
    return NodeType(name=name, ips=tuple(ip(name, i) for i in range(1, count + 1)), **kwargs)


def config(*types: NodeType, **kwargs) -> Config:
    """A config whose launch limits stay out of the way unless a test sets them."""
    kwargs.setdefault("upscaling_speed", 1000.0)
    kwargs.setdefault("max_concurrent_launches", 1000)
    return Config(head_ip=HEAD, node_types=types or (node_type("cpu"),), **kwargs)


def machine(name: str, i: int, state: str = "spare", **kwargs) -> Machine:
    kwargs.setdefault("since", NOW - 60)
    return Machine(ip=ip(name, i), node_type=name, state=MachineState(state), **kwargs)


def ray_node(address: str, total: dict | None = None, available: dict | None = None,
             idle_s: float = 0.0, alive: bool = True) -> RayNode:
    total = {"CPU": 4} if total is None else total
    return RayNode(ip=address, state=RayNodeState.ALIVE if alive else RayNodeState.DEAD,
                   node_id=f"id-{address}", total=total,
                   available=dict(total) if available is None else available, idle_s=idle_s)


def head_node(**kwargs) -> RayNode:
    """The head runs no work of its own here (like `ray start --head --num-cpus=0`)."""
    return ray_node(HEAD, total=kwargs.pop("total", {}), **kwargs)


def worker(name: str, i: int, free: dict | None = None, idle_s: float = 0.0) -> RayNode:
    total = RESOURCES[name]
    return ray_node(ip(name, i), total=total, available=free, idle_s=idle_s)


def busy(name: str, i: int) -> RayNode:
    return worker(name, i, free={key: 0 for key in RESOURCES[name]})


def bundles(resources: dict, count: int = 1) -> BundleDemand:
    return BundleDemand(resources=resources, count=count)


def group(pg_id: str, strategy: str, *shapes: dict) -> PlacementGroupDemand:
    return PlacementGroupDemand(id=pg_id, strategy=PlacementStrategy(strategy), bundles=shapes)


def snapshot(*nodes: RayNode, pending=(), groups=(), constraints=(), head: bool = True
             ) -> DemandSnapshot:
    return DemandSnapshot(
        pending=tuple(pending), placement_groups=tuple(groups), constraints=tuple(constraints),
        nodes=((head_node(),) if head else ()) + tuple(nodes))


def run(cfg: Config, machines=(), snap: DemandSnapshot | None = None, now: float = NOW
        ) -> Decision:
    return decide(cfg, list(machines), snap or snapshot(), now)


def added(decision: Decision) -> dict[str, tuple[str, ...]]:
    """Node type -> the IPs added, in order."""
    out: dict[str, tuple[str, ...]] = {}
    for action in decision.of_kind(ActionKind.ADD):
        out[action.node_type] = out.get(action.node_type, ()) + action.ips
    return out


def add_counts(decision: Decision) -> dict[str, int]:
    return {name: len(ips) for name, ips in added(decision).items()}


def retired(decision: Decision) -> dict[str, str]:
    """IP -> the event of its retirement (idle_expired or drain_requested)."""
    return {address: action.event.value for action in decision.of_kind(ActionKind.RETIRE)
            for address in action.ips}


def marked(decision: Decision) -> dict[str, str]:
    """IP -> event of the MARK actions."""
    return {address: action.event.value for action in decision.of_kind(ActionKind.MARK)
            for address in action.ips}


def every_machine(cfg: Config, state: str = "spare", **kwargs) -> list[Machine]:
    return [Machine(ip=address, node_type=t.name, state=MachineState(state),
                    since=NOW - 60, **kwargs)
            for t in cfg.node_types for address in t.ips]
