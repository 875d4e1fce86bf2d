"""The cluster file -> the agent's `Config`, through the collection's own validation.

The inventory plugin, the roles' filters and the agent share one model of the cluster file,
`plugins/plugin_utils/` of the onprem.ray collection, imported through its
`ansible_collections.onprem.ray` namespace (site-packages of an installed distribution, or a
collections path on `PYTHONPATH`): a file is accepted or refused by all of them with the same
message.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_file import load_cluster_file
from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_model import (
    Cluster,
    ClusterConfigError,
)
from ansible_collections.onprem.ray.plugins.plugin_utils.hostvars import host_variables

from onprem_ray_agent.model import Config, NodeType


class ConfigError(ValueError):
    """The cluster file is refused; the message names the file, the key and the value."""


def collection_dir() -> Path:
    """The directory of the onprem.ray collection the agent imports its model from (its
    playbooks run from there)."""
    import ansible_collections.onprem.ray as collection

    return Path(next(iter(collection.__path__))).resolve()


@dataclasses.dataclass(frozen=True)
class LoadedConfig:
    """A cluster file as the agent uses it: the decision's settings and the pool."""

    path: Path
    config: Config
    cluster: Cluster  # the validated file, for what the policy never needs

    @property
    def pool(self) -> frozenset[str]:
        """The workers the agent may act on: every node type's machines, never the head."""
        return frozenset(ip for node_type in self.config.node_types for ip in node_type.ips
                         if ip != self.config.head_ip)

    def hostvars_of_leaving(self, ip: str, node_type: str) -> dict[str, Any]:
        """Host variables for a machine that left the file but must still be retired: those
        the file gives a worker of its node type (of the head's, if that type is gone too)."""
        cluster = self.cluster
        names = {t.name for t in cluster.node_types}
        name = node_type if node_type in names else cluster.head_node_type
        types = tuple(dataclasses.replace(t, ips=(*t.ips, ip)) if t.name == name else t
                      for t in cluster.node_types)
        return host_variables(dataclasses.replace(cluster, node_types=types), ip)


def config_from_cluster(cluster: Cluster, **agent_settings: Any) -> Config:
    """The decision's settings of a validated `Cluster`. `agent_settings` are
    Config's own fields (provision timeout, backoff ...) that a cluster file does not carry."""
    node_types = tuple(
        NodeType(
            name=node_type.name,
            ips=tuple(node_type.ips),
            resources={name: float(amount) for name, amount in node_type.resources.items()},
            min_workers=node_type.min_workers,
            max_workers=node_type.max_workers,
            labels=dict(node_type.labels),
            idle_timeout_s=(None if node_type.idle_timeout_s is None
                            else float(node_type.idle_timeout_s)),
        )
        for node_type in cluster.node_types
    )
    return Config(
        head_ip=cluster.head_ip,
        node_types=node_types,
        head_node_type=cluster.head_node_type,
        min_workers=cluster.min_workers,
        max_workers=cluster.max_workers,
        upscaling_speed=float(cluster.upscaling_speed),
        idle_timeout_minutes=float(cluster.idle_timeout_minutes),
        **agent_settings,
    )


def load_config(path: str | os.PathLike[str], **agent_settings: Any) -> LoadedConfig:
    """Read and validate the cluster file at `path`; ConfigError says what is wrong.

    The file is validated once, by the collection's model: its `Cluster` makes a valid
    `Config`. `agent_settings` are `Config`'s own fields (see `config_from_cluster`)."""
    path = Path(path).resolve()
    try:
        cluster = load_cluster_file(str(path))
    except ClusterConfigError as err:
        raise ConfigError(str(err)) from None
    config = config_from_cluster(cluster, **agent_settings)
    return LoadedConfig(path=path, config=config, cluster=cluster)
