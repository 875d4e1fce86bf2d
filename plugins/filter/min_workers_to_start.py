# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE)
"""Filter onprem.ray.min_workers_to_start: the workers `up` starts for min_workers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.onprem.ray.plugins.plugin_utils.addresses import address_order
from ansible_collections.onprem.ray.plugins.plugin_utils.min_workers import (
    NodeTypeSlots,
    choose_min_workers,
)


def _whole(value: Any, host: str, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise AnsibleFilterError(f"onprem.ray.min_workers_to_start: {host}: {name} = "
                                 f"{value!r} is not a whole number") from None


def min_workers_to_start(workers: Sequence[str], hostvars: Mapping[str, Any]) -> list[str]:
    """The workers of `workers` to start so that each node type, then the cluster, has its
    min_workers (onprem.ray's plugin_utils.min_workers, as the agent chooses)."""
    by_type: dict[str, list[str]] = {}
    limits: dict[str, tuple[int, int, bool]] = {}
    cluster_min, cluster_max = 0, None
    for host in workers:
        values = hostvars[host]
        name = str(values.get("ray_node_type", ""))
        by_type.setdefault(name, []).append(host)
        resources = values.get("ray_resources") or {}
        limits[name] = (
            _whole(values.get("ray_node_type_min_workers", 0), host, "ray_node_type_min_workers"),
            _whole(values.get("ray_node_type_max_workers", len(workers)), host,
                   "ray_node_type_max_workers"),
            bool(resources.get("GPU")))
        cluster_min = _whole(values.get("ray_min_workers", 0), host, "ray_min_workers")
        if values.get("ray_max_workers") is not None:
            cluster_max = _whole(values["ray_max_workers"], host, "ray_max_workers")
    slots = [NodeTypeSlots(name, limits[name][0], limits[name][1],
                           tuple(sorted(hosts, key=address_order)), gpu=limits[name][2])
             for name, hosts in by_type.items()]
    return choose_min_workers(slots, cluster_min, cluster_max).machines


class FilterModule:
    def filters(self):
        return {"min_workers_to_start": min_workers_to_start}
