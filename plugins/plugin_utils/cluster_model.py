# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE)
"""The cluster model: a validated cluster file, frozen, every default applied.

`cluster_validation.validate` builds it; the inventory plugin, the filters the roles use and the
agent read it. Refusals are `ClusterConfigError`s listing every `Problem` of a file.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, NamedTuple

# Ray's name for the one node type of a local-provider cluster (autoscaler/_private/local).
IMPLICIT_NODE_TYPE = "local.cluster.node"


def group_suffix(name: str) -> str:
    """The part of a group name made from a node type name (Ansible: [A-Za-z0-9_])."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


# ---------------------------------------------------------------- errors


class Problem(NamedTuple):
    path: str  # key path in the file, e.g. provider.worker_ips[2]; "" for the whole file
    value: Any  # the bad value; MISSING when the key is absent, NO_VALUE for the file
    reason: str


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


MISSING = _Marker("<missing>")  # the key is absent
NO_VALUE = _Marker("<no value>")  # the problem is about the file, not one value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class ClusterConfigError(ValueError):
    """The cluster file is refused; `problems` lists every reason, `str()` says it all."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        super().__init__(self._render())

    def _render(self) -> str:
        lines = []
        for path, value, reason in self.problems:
            if value is NO_VALUE:
                lines.append(f"{path}: {reason}" if path else reason)
            elif value is MISSING:
                lines.append(f"{path}: missing: {reason}")
            else:
                lines.append(f"{path or '(top level)'} = {_show(value)}: {reason}")
        if len(lines) == 1:
            return f"{self.source}: {lines[0]}"
        body = "\n".join(f"  - {line}" for line in lines)
        return f"{self.source}: {len(lines)} problems:\n{body}"


# ---------------------------------------------------------------- the model


@dataclasses.dataclass(frozen=True)
class NodeType:
    """Interchangeable machines (e.g. the GPU boxes). `ips` are its workers, head excluded."""

    name: str
    ips: tuple[str, ...]
    resources: dict[str, float]  # what one machine offers Ray; empty: Ray detects
    labels: dict[str, str]
    min_workers: int
    max_workers: int  # never above len(ips)
    initialization_commands: tuple[str, ...] | None = None  # None: the cluster's
    worker_setup_commands: tuple[str, ...] | None = None  # None: setup + worker_setup
    idle_timeout_s: float | None = None  # None: the cluster's idle_timeout_minutes

    @property
    def group(self) -> str:
        return "ray_node_type_" + group_suffix(self.name)


@dataclasses.dataclass(frozen=True)
class Auth:
    ssh_user: str
    ssh_private_key: str | None = None  # absolute path on the machine that read the file
    ssh_known_hosts_file: str | None = None  # absolute; set: host keys must be in it
    ssh_proxy_command: str | None = None


@dataclasses.dataclass(frozen=True)
class HostCommands:
    initialization: tuple[str, ...]
    setup: tuple[str, ...]
    start_ray: tuple[str, ...]  # empty: the roles' own systemd unit


@dataclasses.dataclass(frozen=True)
class Cluster:
    """A validated cluster: every address expanded, every default applied."""

    source: str  # absolute path of the file the cluster was loaded from
    cluster_name: str
    head_ip: str
    head_node_type: str
    node_types: tuple[NodeType, ...]  # in file order; the head's type included
    auth: Auth
    min_workers: int  # cluster-wide, workers only
    max_workers: int  # cluster-wide, never above the pool's worker count
    upscaling_speed: float
    idle_timeout_minutes: float
    head_ssh_address: str  # where the controller reaches the head (provider.external_head_ip)
    file_mounts: dict[str, str]  # remote path -> absolute local path
    cluster_synced_files: tuple[str, ...]
    rsync_exclude: tuple[str, ...]
    rsync_filter: tuple[str, ...]
    initialization_commands: tuple[str, ...]
    setup_commands: tuple[str, ...]
    head_setup_commands: tuple[str, ...]
    worker_setup_commands: tuple[str, ...]
    head_start_ray_commands: tuple[str, ...]
    worker_start_ray_commands: tuple[str, ...]
    metadata: dict[str, Any]
    ray_cluster_yaml: str | None = None  # absolute path, when an inventory source named one

    @property
    def worker_ips(self) -> tuple[str, ...]:
        return tuple(ip for node_type in self.node_types for ip in node_type.ips)

    @property
    def hosts(self) -> tuple[str, ...]:
        return (self.head_ip, *self.worker_ips)

    def node_type(self, name: str) -> NodeType:
        return next(node_type for node_type in self.node_types if node_type.name == name)

    def node_type_of(self, host: str) -> NodeType:
        if host == self.head_ip:
            return self.node_type(self.head_node_type)
        for node_type in self.node_types:
            if host in node_type.ips:
                return node_type
        raise KeyError(f"{host} is not a machine of cluster {self.cluster_name}")

    def commands_for(self, host: str) -> HostCommands:
        """What Ray's cluster launcher would run on `host` (a type's lists replace the globals)."""
        if host == self.head_ip:
            return HostCommands(self.initialization_commands,
                                self.setup_commands + self.head_setup_commands,
                                self.head_start_ray_commands)
        node_type = self.node_type_of(host)
        init = node_type.initialization_commands
        setup = node_type.worker_setup_commands
        return HostCommands(
            self.initialization_commands if init is None else init,
            self.setup_commands + self.worker_setup_commands if setup is None else setup,
            self.worker_start_ray_commands)
