"""The cluster file -> the agent's `Config`, through the collection's own validation.

The inventory plugin, the roles and the agent share one parser,
`plugins/module_utils/cluster_config.py` of the collection: a file is accepted or refused by
all of them with the same message. The agent loads that module by path, since the collection is
not a Python package on the head.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from onprem_ray_agent.model import Config, NodeType

COLLECTION_DIR_ENV = "ONPREM_RAY_COLLECTION_DIR"
SHARED_MODULE = Path("plugins", "module_utils", "cluster_config.py")


class ConfigError(ValueError):
    """The cluster file is refused; the message names the file, the key and the value."""


def collection_dir() -> Path:
    """Where the onprem.ray collection is: $ONPREM_RAY_COLLECTION_DIR, else installed beside
    this package (the onprem-ray distribution: site-packages/ansible_collections/onprem/ray),
    else the repository that holds this package (agent/onprem_ray_agent -> its root)."""
    configured = os.environ.get(COLLECTION_DIR_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    package = Path(__file__).resolve().parent
    beside = package.parent / "ansible_collections" / "onprem" / "ray"
    if (beside / "plugins").is_dir():
        return beside
    return package.parents[1]


@functools.cache
def _shared_module(path: Path) -> ModuleType:
    if not path.is_file():
        raise ConfigError(
            f"the collection's cluster file validation {path} does not exist: set "
            f"{COLLECTION_DIR_ENV} to the directory of the onprem.ray collection")
    spec = importlib.util.spec_from_file_location("onprem_ray_cluster_config", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cluster_config_module() -> ModuleType:
    """The shared `cluster_config` module of the collection."""
    return _shared_module(collection_dir() / SHARED_MODULE)


@dataclasses.dataclass(frozen=True)
class LoadedConfig:
    """A cluster file as the agent uses it: the decision's settings and the pool."""

    path: Path
    config: Config
    cluster: Any  # cluster_config.Cluster: the validated file, for what the policy never needs

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
        return dataclasses.replace(cluster, node_types=types).hostvars(ip)


def config_from_cluster(cluster: Any, **agent_settings: Any) -> Config:
    """The decision's settings of a validated `cluster_config.Cluster`. `agent_settings` are
    Config's own fields (provision timeout, backoff ...) that a cluster file does not carry."""
    node_types = tuple(
        NodeType(
            name=node_type.name,
            ips=tuple(node_type.ips),
            resources={name: float(amount) for name, amount in node_type.resources.items()},
            min_workers=node_type.min_workers,
            max_workers=node_type.max_workers,
            labels=dict(node_type.labels),
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
    """Read and validate the cluster file at `path`; ConfigError says what is wrong."""
    shared = cluster_config_module()
    path = Path(path).resolve()
    try:
        cluster = shared.load_cluster_file(str(path))
    except shared.ClusterConfigError as err:
        raise ConfigError(str(err)) from None
    try:
        config = config_from_cluster(cluster, **agent_settings)
    except ValueError as err:
        raise ConfigError(f"{path}: {err}") from None
    return LoadedConfig(path=path, config=config, cluster=cluster)
