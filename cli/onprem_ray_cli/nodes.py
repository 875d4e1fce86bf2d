"""Which machines a command acts on: the head by default, one with --node, all with
--all-nodes (head first); a --node outside the cluster file is refused."""

from __future__ import annotations

from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_model import Cluster

from onprem_ray_cli import errors


def select(cluster: Cluster, node: str | None = None, all_nodes: bool = False) -> list[str]:
    if node and all_nodes:
        raise errors.CliError("--node and --all-nodes exclude each other", errors.USAGE)
    if all_nodes:
        return list(cluster.hosts)
    if node is None:
        return [cluster.head_ip]
    if node not in cluster.hosts:
        raise errors.CliError(
            f"--node {node}: not a machine of cluster {cluster.cluster_name} "
            f"({cluster.source}); its machines: {', '.join(cluster.hosts)}", errors.USAGE)
    return [node]
