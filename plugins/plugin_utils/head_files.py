# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE)
"""The head's copy of the cluster file, rendered from the validated model.

The agent on the head validates its copy as the controller validated the original, so the
copy is written from the model, in Ray's key names, with the paths of the head: its key to the
workers, its known_hosts, its own copies of the file_mounts. An inline inventory source gives
one file; a source naming a Ray YAML gives two, the Ray YAML and a source naming it.
"""

from __future__ import annotations

import os
from typing import Any

from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_file import (
    INVENTORY_KEYS,
    PLUGIN_NAMES,
    load_cluster_file,
    read_yaml,
)
from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_model import (
    IMPLICIT_NODE_TYPE,
    Cluster,
    NodeType,
)

HEAD_RAY_YAML = "ray-cluster.yaml"  # beside the head's inventory source
# Options of the controller's source that mean nothing on the head: the Ray YAML is the
# head's own copy, and the state store is the agent's.
_NOT_COPIED = frozenset({"plugin", "ray_cluster_yaml", "state_store"})
_HEADER = ("# Managed by Ansible (onprem.ray): the head's copy of {source},\n"
           "# rendered from its validated model. Local changes are overwritten.\n")


def head_cluster_files(source: str, path: str, *, home: str, ssh_private_key: str,
                       ssh_known_hosts_file: str) -> list[dict[str, str]]:
    """[{path, content}] of the head's copy of the inventory source `source`, at `path`.

    `home` is the login user's home on the head (for `~` in file_mounts), `ssh_private_key`
    and `ssh_known_hosts_file` the head's files for reaching the workers.
    """
    import yaml  # only here: the model needs no PyYAML

    cluster = load_cluster_file(source)
    raw = read_yaml(cluster.source)
    options = {key: value for key, value in raw.items()
               if key in INVENTORY_KEYS - _NOT_COPIED} if isinstance(raw, dict) else {}
    ray = ray_cluster_yaml(cluster, home=home, ssh_private_key=ssh_private_key,
                           ssh_known_hosts_file=ssh_known_hosts_file)

    def render(data: dict[str, Any], of: str) -> str:
        return _HEADER.format(source=of) + yaml.safe_dump(
            data, sort_keys=False, default_flow_style=False, width=100)

    head_source = {"plugin": PLUGIN_NAMES[0], **options}
    if cluster.ray_cluster_yaml is None:
        return [{"path": path, "content": render({**head_source, **ray}, cluster.source)}]
    ray_path = os.path.join(os.path.dirname(path), HEAD_RAY_YAML)
    return [{"path": ray_path, "content": render(ray, cluster.ray_cluster_yaml)},
            {"path": path, "content": render({**head_source, "ray_cluster_yaml": HEAD_RAY_YAML},
                                             cluster.source)}]


def ray_cluster_yaml(cluster: Cluster, *, home: str, ssh_private_key: str,
                     ssh_known_hosts_file: str) -> dict[str, Any]:
    """The cluster in Ray's key names, every default explicit, with the head's paths."""
    auth: dict[str, Any] = {"ssh_user": cluster.auth.ssh_user,
                            "ssh_private_key": ssh_private_key,
                            "ssh_known_hosts_file": ssh_known_hosts_file}
    if cluster.auth.ssh_proxy_command:
        auth["ssh_proxy_command"] = cluster.auth.ssh_proxy_command
    provider: dict[str, Any] = {"type": "local", "head_ip": cluster.head_ip}
    data: dict[str, Any] = {"cluster_name": cluster.cluster_name, "provider": provider,
                            "auth": auth, "min_workers": cluster.min_workers,
                            "max_workers": cluster.max_workers,
                            "upscaling_speed": cluster.upscaling_speed,
                            "idle_timeout_minutes": cluster.idle_timeout_minutes}
    if _is_implicit(cluster):
        provider["worker_ips"] = list(cluster.worker_ips)
    else:
        data["head_node_type"] = cluster.head_node_type
        data["available_node_types"] = {t.name: _node_type(t) for t in cluster.node_types}
    # The agent provisions workers from the head's own copies, as Ray's autoscaler does.
    data["file_mounts"] = {remote: _on_head(remote, home) for remote in cluster.file_mounts}
    data["cluster_synced_files"] = list(cluster.cluster_synced_files)
    data["rsync_exclude"] = list(cluster.rsync_exclude)
    data["rsync_filter"] = list(cluster.rsync_filter)
    for key in ("initialization_commands", "setup_commands", "head_setup_commands",
                "worker_setup_commands", "head_start_ray_commands",
                "worker_start_ray_commands"):
        data[key] = list(getattr(cluster, key))
    if cluster.metadata:
        data["metadata"] = dict(cluster.metadata)
    return data


def _is_implicit(cluster: Cluster) -> bool:
    """Ray's one local node type, whose limits Ray's top-level min/max_workers give."""
    if len(cluster.node_types) != 1 or cluster.head_node_type != IMPLICIT_NODE_TYPE:
        return False
    only = cluster.node_types[0]
    return (not only.resources and not only.labels and only.initialization_commands is None
            and only.worker_setup_commands is None and only.idle_timeout_s is None
            and only.max_workers == min(cluster.max_workers, len(only.ips))
            and only.min_workers == min(cluster.min_workers, cluster.max_workers))


def _node_type(node_type: NodeType) -> dict[str, Any]:
    spec: dict[str, Any] = {"worker_ips": list(node_type.ips),
                            "resources": dict(node_type.resources),
                            "labels": dict(node_type.labels),
                            "min_workers": node_type.min_workers,
                            "max_workers": node_type.max_workers}
    for key in ("initialization_commands", "worker_setup_commands"):
        if getattr(node_type, key) is not None:
            spec[key] = list(getattr(node_type, key))
    if node_type.idle_timeout_s is not None:
        spec["idle_timeout_s"] = node_type.idle_timeout_s
    return spec


def _on_head(remote: str, home: str) -> str:
    return home + remote[1:] if remote == "~" or remote.startswith("~/") else remote
