# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE)
"""Host variables: what the inventory plugin gives each host of a cluster (docs/hostvars.md)."""

from __future__ import annotations

import shlex
from typing import Any

from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_model import Auth, Cluster


def ssh_common_args(auth: Auth) -> str:
    """Ansible's ssh arguments: host keys verified, never blanket-accepted."""
    if auth.ssh_known_hosts_file:
        args = ["-o", f"UserKnownHostsFile={auth.ssh_known_hosts_file}",
                "-o", "StrictHostKeyChecking=yes"]
    else:
        args = ["-o", "StrictHostKeyChecking=accept-new"]  # recorded on first contact
    if auth.ssh_proxy_command:
        args += ["-o", f"ProxyCommand={auth.ssh_proxy_command}"]
    # Ansible splits this string with shlex: quoting keeps each argument whole.
    return " ".join(shlex.quote(arg) for arg in args)


def host_variables(cluster: Cluster, host: str) -> dict[str, Any]:
    """The variables of one host, as docs/hostvars.md lists them."""
    node_type = cluster.node_type_of(host)
    commands = cluster.commands_for(host)
    values: dict[str, Any] = {
        "ansible_host": cluster.head_ssh_address if host == cluster.head_ip else host,
        "ansible_user": cluster.auth.ssh_user,
        "ansible_ssh_common_args": ssh_common_args(cluster.auth),
        "ray_cluster_name": cluster.cluster_name,
        "ray_cluster_file": cluster.source,
        "ray_head_ip": cluster.head_ip,
        "ray_node_type": node_type.name,
        "ray_resources": dict(node_type.resources),
        "ray_labels": dict(node_type.labels),
        "ray_initialization_commands": list(commands.initialization),
        "ray_setup_commands": list(commands.setup),
        "ray_start_ray_commands": list(commands.start_ray),
        "ray_file_mounts": dict(cluster.file_mounts),
        "ray_cluster_synced_files": list(cluster.cluster_synced_files),
        "ray_rsync_exclude": list(cluster.rsync_exclude),
        "ray_rsync_filter": list(cluster.rsync_filter),
        "ray_min_workers": cluster.min_workers,
        "ray_max_workers": cluster.max_workers,
        "ray_node_type_min_workers": node_type.min_workers,
        "ray_node_type_max_workers": node_type.max_workers,
    }
    if cluster.auth.ssh_private_key:
        values["ansible_ssh_private_key_file"] = cluster.auth.ssh_private_key
    return values
