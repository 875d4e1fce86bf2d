# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE)
"""Why an inventory has no cluster: the refusal of each cluster source that did not parse.

Ansible skips an inventory source that fails to parse with a warning (unless
`any_unparsed_is_failed` is set), and a playbook then matches no host and succeeds. The
playbooks ask this module why their groups are empty, to stop with the reason instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_file import load_cluster_file
from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_model import ClusterConfigError

CLUSTER_FILE_SUFFIXES = ("cluster.yml", "cluster.yaml")  # what the inventory plugin reads
_NOT_SOURCES = frozenset({"group_vars", "host_vars"})


def missing_groups_message(groups: Mapping[str, Sequence[str]], required: Iterable[str],
                           sources: Iterable[str]) -> str | None:
    """None when every group of `required` has a host; else what is wrong, and why."""
    empty = [name for name in required if not groups.get(name)]
    if not empty:
        return None
    names = " and ".join(empty)
    sources = [str(source) for source in sources or ()]
    refusals = []
    cluster_files = []
    for path in _cluster_files(sources):
        cluster_files.append(path)
        try:
            load_cluster_file(path)
        except ClusterConfigError as err:
            refusals.append(f"the inventory source {path} did not parse, and Ansible went on "
                            f"without it (see its warning above): {err}")
    if refusals:
        return f"no host in {names}: " + "\n".join(refusals)
    if not cluster_files:
        listed = ", ".join(sources) or "none"
        return (f"no host in {names}: no cluster file among the inventory sources ({listed}); "
                "pass one with -i (a file named *cluster.yml with plugin: onprem.ray.cluster)")
    return (f"no host in {names}: the cluster files {', '.join(cluster_files)} parsed, but "
            f"give none")


def _cluster_files(sources: Iterable[str]) -> list[str]:
    found = []
    for source in sources:
        if os.path.isfile(source) and source.endswith(CLUSTER_FILE_SUFFIXES):
            found.append(os.path.abspath(source))
        elif os.path.isdir(source):
            for root, dirs, files in os.walk(source):
                dirs[:] = sorted(d for d in dirs if d not in _NOT_SOURCES)
                found += [os.path.abspath(os.path.join(root, name)) for name in sorted(files)
                          if name.endswith(CLUSTER_FILE_SUFFIXES)]
    return found
