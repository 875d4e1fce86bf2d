# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE)
"""Filter onprem.ray.head_cluster_files: the head's copy of the cluster file."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.onprem.ray.plugins.plugin_utils import head_files
from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_model import ClusterConfigError


def head_cluster_files(source, path, home, ssh_private_key, ssh_known_hosts_file):
    try:
        return head_files.head_cluster_files(
            str(source), str(path), home=str(home), ssh_private_key=str(ssh_private_key),
            ssh_known_hosts_file=str(ssh_known_hosts_file))
    except ClusterConfigError as err:
        raise AnsibleFilterError(f"onprem.ray.head_cluster_files: {err}") from None


class FilterModule:
    def filters(self):
        return {"head_cluster_files": head_cluster_files}
