"""Which cluster a command is about: the cluster file given, loaded through the collection's
one model of it (`plugins/plugin_utils`), and the inventory source Ansible reads for it.

The file is a Ray cluster YAML with `provider: type: local`, this project's cluster file, or
an inventory source (`plugin: onprem.ray.cluster`) inline or naming a Ray YAML.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_file import (
    PLUGIN_NAMES,
    load_cluster_file,
    read_yaml,
)
from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_model import (
    Cluster,
    ClusterConfigError,
    group_suffix,
)

from onprem_ray_cli import errors

# The names the inventory plugin accepts (plugins/inventory/cluster.py verify_file).
INVENTORY_SUFFIXES = ("cluster.yml", "cluster.yaml")
WHAT_IT_IS = ("a Ray cluster YAML with `provider: type: local`, or an inventory source "
              "with `plugin: onprem.ray.cluster`")


@dataclass(frozen=True)
class Target:
    """A loaded cluster file: the model, and where this command keeps its own files for it."""

    path: Path  # the file given, absolute
    cluster: Cluster
    work_dir: Path  # runs, logs and generated inventories of this cluster, on this machine


def load(path: str) -> Target:
    """The cluster of `path`; a missing or refused file is a CliError naming it and why."""
    given = Path(path).expanduser().absolute()
    if not given.exists():
        raise errors.CliError(
            f"{given}: no such cluster file. Give {WHAT_IT_IS}.", errors.CLUSTER_FILE_MISSING)
    if not given.is_file():
        raise errors.CliError(f"{given}: not a file. Give {WHAT_IT_IS}.",
                              errors.CLUSTER_FILE_MISSING)
    try:
        cluster = load_cluster_file(str(given))
    except ClusterConfigError as err:
        unreadable = any("cannot be read" in problem.reason for problem in err.problems)
        code = errors.CLUSTER_FILE_MISSING if unreadable else errors.CLUSTER_FILE_REFUSED
        raise errors.CliError(f"refused: {err}\nFix the file (docs/cluster-file.md lists every "
                              "key), then run the command again.", code) from None
    return Target(given, cluster, work_dir_for(given, cluster))


def work_dir_for(path: Path, cluster: Cluster) -> Path:
    """~/.cache/onprem-ray/<cluster name>-<hash of the file's path>: two files naming the same
    cluster_name never share runs."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "onprem-ray"
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    return base / f"{group_suffix(cluster.cluster_name)}-{digest}"


def inventory_source(target: Target) -> Path:
    """The inventory source Ansible reads: the file itself when it is one, else a source
    beside this command's files naming the Ray YAML given (which stays the one description)."""
    raw = read_yaml(str(target.path))
    if isinstance(raw, dict) and raw.get("plugin") in PLUGIN_NAMES:
        if not target.path.name.endswith(INVENTORY_SUFFIXES):
            raise errors.CliError(
                f"{target.path}: an inventory source must be named *cluster.yml or "
                "*cluster.yaml for the inventory plugin to read it: rename it.",
                errors.CLUSTER_FILE_REFUSED)
        return target.path
    target.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    source = target.work_dir / "cluster.yml"
    source.write_text(f"# Written by onprem-ray: the inventory source of {target.path}\n"
                      f"plugin: {PLUGIN_NAMES[0]}\nray_cluster_yaml: '{target.path}'\n",
                      encoding="utf-8")
    return source
