"""A Ray job that needs a CPU on three different machines: one task in each bundle of a
STRICT_SPREAD placement group. Prints the addresses the tasks ran on, as JSON."""

import json

import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

ray.init(address="auto")
group = placement_group([{"CPU": 1}] * 3, strategy="STRICT_SPREAD")
ray.get(group.ready(), timeout=120)


@ray.remote(num_cpus=1)
def where() -> str:
    return ray.util.get_node_ip_address()


tasks = [where.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
    placement_group=group, placement_group_bundle_index=i)).remote() for i in range(3)]
print(json.dumps(sorted(ray.get(tasks, timeout=120))))
