"""`up --min-workers/--max-workers`: the cluster's limits replaced for this cluster, written as
an inventory source of this command's own (from the validated model, with the controller's
paths), so that `up`, the head's copy and its agent all follow them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml
from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_file import PLUGIN_NAMES
from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_model import (
    IMPLICIT_NODE_TYPE,
    Cluster,
)
from ansible_collections.onprem.ray.plugins.plugin_utils.head_files import ray_cluster_yaml

from onprem_ray_cli import errors, resolve


def with_limits(cluster: Cluster, min_workers: int | None,
                max_workers: int | None) -> Cluster:
    """The cluster with new cluster-wide limits (a Ray YAML's single node type follows)."""
    low = cluster.min_workers if min_workers is None else min_workers
    high = cluster.max_workers if max_workers is None else max_workers
    if low < 0 or high < 0 or low > high:
        raise errors.CliError(f"--min-workers {low} and --max-workers {high}: need "
                              "0 <= min <= max", errors.USAGE)
    return dataclasses.replace(cluster, min_workers=low, max_workers=high)


def render(cluster: Cluster, implicit_type: bool) -> dict:
    auth = cluster.auth
    data = ray_cluster_yaml(cluster, home="~", ssh_private_key=auth.ssh_private_key or "",
                            ssh_known_hosts_file=auth.ssh_known_hosts_file or "")
    data["auth"] = {key: value for key, value in data["auth"].items() if value}
    data["file_mounts"] = dict(cluster.file_mounts)  # the controller's own paths
    if implicit_type:  # Ray's one node type: its limits are the cluster's
        data.pop("available_node_types", None)
        data.pop("head_node_type", None)
        data["provider"]["worker_ips"] = list(cluster.worker_ips)
    return {"plugin": PLUGIN_NAMES[0], **data}


def write_inventory(target: resolve.Target, min_workers: int | None,
                    max_workers: int | None) -> Path:
    original = target.cluster
    cluster = with_limits(original, min_workers, max_workers)
    implicit = original.head_node_type == IMPLICIT_NODE_TYPE
    target.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = target.work_dir / "limits.cluster.yml"
    header = (f"# Written by onprem-ray up: {target.path} with min_workers "
              f"{cluster.min_workers}, max_workers {cluster.max_workers}\n")
    path.write_text(header + yaml.safe_dump(render(cluster, implicit), sort_keys=False),
                    encoding="utf-8")
    try:
        resolve.load(str(path))
    except errors.CliError as err:
        raise errors.CliError(f"--min-workers/--max-workers: {err}", err.code) from None
    return path

