"""Ray 2.60's own autoscaler v2 scheduler on the same input as `decide`: the reference the
planner is held to. Builds Ray's `SchedulingRequest` from (config, machines, snapshot) as Ray's
autoscaler would see the same cluster, and returns how many machines of each type Ray would
launch. Imports Ray only when called (importing Ray fixes its token settings for the process).

What is mapped: node types (resources, labels, min/max workers, idle_timeout_s; a type's max
is its spare machines plus those already running, as the pool allows no more), the global
max_workers (+1 for the head, as Ray's `get_max_num_nodes`), the head and alive workers as
RAY_RUNNING instances with their free resources and labels, joining machines as ALLOCATED,
pending bundles with their label selectors, placement groups (STRICT_PACK as affinity,
STRICT_SPREAD as anti-affinity on the group's `_PG_` label, which the nodes holding its placed
bundles carry) and request_resources() as the cluster constraint.
"""

from __future__ import annotations

from collections import Counter

from onprem_ray_agent.model import (
    Config,
    DemandSnapshot,
    LabelOperator,
    Machine,
    MachineState,
    PlacementStrategy,
    RayNodeState,
    Selectors,
)

HEAD_TYPE = "__head__"


def _selectors(selectors: Selectors) -> list:
    from ray.core.generated.common_pb2 import (
        LabelSelector,
        LabelSelectorConstraint,
        LabelSelectorOperator,
    )

    operator = {LabelOperator.IN: LabelSelectorOperator.LABEL_OPERATOR_IN,
                LabelOperator.NOT_IN: LabelSelectorOperator.LABEL_OPERATOR_NOT_IN}
    return [LabelSelector(label_constraints=[
        LabelSelectorConstraint(label_key=c.key, operator=operator[c.operator],
                                label_values=list(c.values)) for c in selector.constraints])
        for selector in selectors]


def scheduling_request(config: Config, machines: list[Machine], snapshot: DemandSnapshot):
    from ray.autoscaler.v2.instance_manager.config import NodeTypeConfig
    from ray.autoscaler.v2.scheduler import SchedulingRequest
    from ray.autoscaler.v2.schema import AutoscalerInstance
    from ray.core.generated.autoscaler_pb2 import (
        AffinityConstraint,
        AntiAffinityConstraint,
        ClusterResourceConstraint,
        GangResourceRequest,
        NodeState,
        PlacementConstraint,
        ResourceRequest,
        ResourceRequestByCount,
    )
    from ray.core.generated.instance_manager_pb2 import Instance, NodeKind

    alive = {n.ip: n for n in snapshot.nodes if n.state == RayNodeState.ALIVE}
    pg_labels: dict[str, dict[str, str]] = {}
    for group in snapshot.placement_groups:
        for ip in group.placed_on:
            pg_labels.setdefault(ip, {})[f"_PG_{group.id}"] = group.id
    usable = Counter(m.node_type for m in machines
                     if m.state in (MachineState.SPARE, MachineState.ACTIVE,
                                    MachineState.JOINING))
    configs = {
        t.name: NodeTypeConfig(
            name=t.name, min_worker_nodes=min(t.effective_min, usable[t.name]),
            max_worker_nodes=min(t.effective_max, usable[t.name]),
            idle_timeout_s=t.idle_timeout_s, resources=dict(t.resources),
            labels=dict(t.labels))
        for t in config.node_types}
    head = alive[config.head_ip]
    configs[HEAD_TYPE] = NodeTypeConfig(name=HEAD_TYPE, min_worker_nodes=0,
                                        max_worker_nodes=1, resources=dict(head.total))

    def running(index: int, ip: str, node_type: str, kind) -> AutoscalerInstance:
        node = alive[ip]
        return AutoscalerInstance(
            cloud_instance_id=ip,
            im_instance=Instance(instance_id=f"i{index}", instance_type=node_type,
                                 status=Instance.RAY_RUNNING, node_kind=kind,
                                 node_id=f"n{index}"),
            ray_node=NodeState(node_id=f"n{index}".encode(), node_ip_address=ip,
                               total_resources=dict(node.total),
                               available_resources=dict(node.available),
                               labels=dict(node.labels),
                               dynamic_labels=pg_labels.get(ip, {}),
                               idle_duration_ms=int(node.idle_s * 1000)))

    instances = [running(0, config.head_ip, HEAD_TYPE, NodeKind.HEAD)]
    for i, m in enumerate(machines, start=1):
        if m.state == MachineState.ACTIVE and m.ip in alive:
            instances.append(running(i, m.ip, m.node_type, NodeKind.WORKER))
        elif m.state == MachineState.JOINING:
            instances.append(AutoscalerInstance(
                cloud_instance_id=m.ip,
                im_instance=Instance(instance_id=f"i{i}", instance_type=m.node_type,
                                     status=Instance.ALLOCATED, node_kind=NodeKind.WORKER)))

    def request(resources, selectors: Selectors = (), constraint=None) -> ResourceRequest:
        return ResourceRequest(resources_bundle=dict(resources),
                               placement_constraints=[constraint] if constraint else [],
                               label_selectors=_selectors(selectors))

    gangs = []
    for group in snapshot.placement_groups:
        label = f"_PG_{group.id}"
        constraint = None
        if group.strategy == PlacementStrategy.STRICT_SPREAD:
            constraint = PlacementConstraint(anti_affinity=AntiAffinityConstraint(
                label_name=label, label_value=group.id))
        elif group.strategy == PlacementStrategy.STRICT_PACK:
            constraint = PlacementConstraint(affinity=AffinityConstraint(
                label_name=label, label_value=group.id))
        gangs.append(GangResourceRequest(
            requests=[request(b, group.selectors(i), constraint)
                      for i, b in enumerate(group.bundles)],
            details=f"{group.id}:{group.strategy.value}|PENDING"))
    constraints = []
    if snapshot.constraints:
        constraints.append(ClusterResourceConstraint(resource_requests=[
            ResourceRequestByCount(request=request(b.resources, b.label_selectors),
                                   count=b.count) for b in snapshot.constraints]))
    return SchedulingRequest(
        disable_launch_config_check=True, node_type_configs=configs,
        max_num_nodes=None if config.max_workers is None else config.max_workers + 1,
        idle_timeout_s=config.idle_timeout_s,
        resource_requests=[ResourceRequestByCount(request=request(b.resources,
                                                                  b.label_selectors),
                                                  count=b.count) for b in snapshot.pending],
        gang_resource_requests=gangs, cluster_resource_constraints=constraints,
        current_instances=instances)


def ray_launches(config: Config, machines: list[Machine], snapshot: DemandSnapshot
                 ) -> dict[str, int]:
    """Node type -> machines Ray 2.60's scheduler would launch for this situation."""
    from ray.autoscaler.v2.scheduler import ResourceDemandScheduler

    reply = ResourceDemandScheduler().schedule(scheduling_request(config, machines, snapshot))
    launches: dict[str, int] = {}
    for launch in reply.to_launch:
        launches[launch.instance_type] = launches.get(launch.instance_type, 0) + launch.count
    return launches


def ray_terminations(config: Config, machines: list[Machine], snapshot: DemandSnapshot
                     ) -> set[str]:
    """The addresses Ray 2.60's scheduler would terminate (idle, above a max, not needed)."""
    from ray.autoscaler.v2.scheduler import ResourceDemandScheduler

    reply = ResourceDemandScheduler().schedule(scheduling_request(config, machines, snapshot))
    # instance ids are "i<position in machines, from 1>"; i0 is the head
    return {machines[int(t.instance_id[1:]) - 1].ip for t in reply.to_terminate
            if t.instance_id != "i0"}
