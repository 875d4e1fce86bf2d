# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE)
"""Inventory plugin onprem.ray.cluster: a cluster file -> hosts, groups and hostvars."""

from __future__ import annotations

DOCUMENTATION = r"""
name: cluster
short_description: A Ray cluster on a fixed pool of machines, from a cluster file or Ray YAML
version_added: 0.1.0
author:
  - onprem.ray maintainers (@onprem-ray)
description:
  - Reads a cluster file and makes one inventory host per machine of the pool, with the groups
    and host variables the roles of the C(onprem.ray) collection use (see C(docs/hostvars.md)).
  - The cluster is described inline in the inventory source, with the key names of Ray's
    cluster YAML (C(cluster_name), C(provider.head_ip), C(provider.worker_ips), C(auth.*),
    C(min_workers), C(max_workers), C(upscaling_speed), C(idle_timeout_minutes),
    C(file_mounts), C(cluster_synced_files), C(rsync_exclude), C(rsync_filter) and the
    C(*_commands) lists), or in an existing Ray cluster YAML named by O(ray_cluster_yaml).
  - Beyond Ray, C(available_node_types) may give each node type its own C(worker_ips),
    C(resources), C(labels), C(min_workers), C(max_workers), C(idle_timeout_s) (Ray's, in
    seconds), C(initialization_commands) and C(worker_setup_commands), so that GPU boxes and
    CPU boxes form separate pools.
    C(head_node_type) names the head's type. C(head_ip) and C(worker_ips) are also accepted at
    the top level.
  - An entry of C(worker_ips) is an IP address, a hostname, a range C(10.0.0.5-10.0.0.20) or
    a CIDR block C(10.0.0.0/24), expanded to at most 4096 addresses.
  - Keys of Ray's format that cannot be honoured on-prem (a C(provider.type) other than
    C(local), cloud C(node_config), C(docker) with an image, C(provider.coordinator_address),
    ...) are refused by name with the reason; unknown keys are refused with the closest valid
    name. The source is refused as a whole, with every problem found, each naming the file,
    the key path and the bad value. C(docs/cluster-file.md) lists every key.
  - Hosts are named by their address as written (after expansion). Groups are C(ray_head)
    (the head), C(ray_workers) (every worker), C(ray_node_type_<type>) per node type (the
    head's type included; characters other than letters, digits and C(_) become C(_)) and,
    when O(state_store) exists, C(ray_lifecycle_<state>) by lifecycle state.
  - Ansible skips a source that fails to parse with a warning. The collection's playbooks then
    stop before their first play with the reason, whatever C(ansible.cfg) says (lookup
    C(onprem.ray.cluster_hosts)); for other uses, set C(any_unparsed_is_failed = true) in the
    C([inventory]) section of C(ansible.cfg) so that a refused source stops Ansible.
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: Marks the file as a source for this plugin.
    type: str
    required: true
    choices: [onprem.ray.cluster]
  ray_cluster_yaml:
    description:
      - Path of a Ray cluster YAML (C(provider.type) C(local)) that describes the cluster,
        relative to the inventory source's directory.
      - When set, the source holds only plugin options; cluster keys next to it are refused,
        so there is one copy of the cluster.
    type: str
  state_store:
    description:
      - Path of the agent's state store (SQLite), relative to the inventory source's
        directory. Read only, to put hosts in C(ray_lifecycle_<state>) groups and set
        C(ray_lifecycle_state).
      - A missing store is not an error (the agent has not run yet); an unreadable one gives
        a warning and no lifecycle groups.
    type: str
    env:
      - name: ONPREM_RAY_STATE_STORE
notes:
  - C(auth.ssh_private_key) must exist and be readable by its owner only (no group or other
    permission bits).
  - Host keys are always verified. With C(auth.ssh_known_hosts_file), only the keys it holds
    are accepted; without it, a key is recorded on first contact and verified afterwards.
  - Values from the file are marked unsafe, so Ansible never evaluates templates in them.
seealso:
  - name: Ray cluster YAML configuration
    description: The format this plugin reads.
    link: https://docs.ray.io/en/latest/cluster/vms/references/ray-cluster-configuration.html
"""

EXAMPLES = r"""
---
# site.cluster.yml: a heterogeneous pool, inline
plugin: onprem.ray.cluster
cluster_name: lab
provider:
  type: local
  head_ip: 10.0.0.10
auth:
  ssh_user: ops
  ssh_private_key: ~/.ssh/lab_ed25519
  ssh_known_hosts_file: known_hosts
max_workers: 10
idle_timeout_minutes: 10
head_node_type: cpu
available_node_types:
  cpu:
    worker_ips: [10.0.0.11-10.0.0.18]
    resources: {CPU: 32}
  gpu:
    worker_ips: [10.0.1.0/30, gpu-big.lab.example]
    resources: {CPU: 64, GPU: 8}
    labels: {accelerator: a100}
    min_workers: 1
    worker_setup_commands:
      - nvidia-smi

---
# ray.cluster.yml: an existing `ray up` cluster YAML, used as is
plugin: onprem.ray.cluster
ray_cluster_yaml: ../ray/cluster.yaml
state_store: /var/lib/onprem-ray/state.db

---
# small.cluster.yml: Constructable options work as usual
plugin: onprem.ray.cluster
cluster_name: small
head_ip: 192.168.1.2
worker_ips: [192.168.1.3, 192.168.1.4]
auth: {ssh_user: ops}
keyed_groups:
  - key: ray_labels.rack | default('none')
    prefix: rack
"""

import contextlib
import os
import re
import sqlite3
import urllib.parse

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable
from ansible.utils.display import Display
from ansible.utils.unsafe_proxy import wrap_var
from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_file import (
    load_inventory_source,
    read_yaml,
)
from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_model import ClusterConfigError
from ansible_collections.onprem.ray.plugins.plugin_utils.hostvars import host_variables

display = Display()

_STATE_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")


def read_lifecycle_states(path: str | None) -> dict[str, str]:
    """ip -> lifecycle state from the agent's store (table machines(ip, state)), read only.

    A missing store is normal (the agent has not run yet); an unreadable one is warned about.
    """
    if not path or not os.path.exists(path):
        return {}
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=2)) as db:
            rows = db.execute("SELECT ip, state FROM machines").fetchall()
    except (sqlite3.Error, OSError) as err:
        display.warning(f"onprem.ray.cluster: state store {path} not read ({err}); "
                        "no lifecycle groups")
        return {}
    return {str(ip): state for ip, state in rows
            if isinstance(state, str) and _STATE_RE.fullmatch(state)}


class InventoryModule(BaseInventoryPlugin, Constructable):
    NAME = "onprem.ray.cluster"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(("cluster.yml", "cluster.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        try:
            raw = read_yaml(path)  # our messages for malformed YAML
        except ClusterConfigError as err:
            raise AnsibleParserError(str(err)) from err
        self._read_config_data(path)  # options; declines sources of other plugins
        cluster = self._load_cluster(path, raw)
        self._populate(cluster, read_lifecycle_states(self._state_store_path(path)))

    def _load_cluster(self, path, raw):
        """The validated cluster of the source; refusals become parser errors."""
        try:
            return load_inventory_source(path, raw)
        except ClusterConfigError as err:
            raise AnsibleParserError(str(err)) from err

    def _state_store_path(self, path):
        store = self.get_option("state_store")
        if not store:
            return None
        return os.path.join(os.path.dirname(os.path.abspath(path)), os.path.expanduser(store))

    def _populate(self, cluster, states):
        """Hosts, groups and hostvars of `cluster`; `states` is ip -> lifecycle state."""
        inventory = self.inventory
        for group in ("ray_head", "ray_workers", *(t.group for t in cluster.node_types)):
            inventory.add_group(group)
        strict = self.get_option("strict")
        for host in cluster.hosts:
            inventory.add_host(host, group="ray_head" if host == cluster.head_ip
                               else "ray_workers")
            inventory.add_host(host, group=cluster.node_type_of(host).group)
            hostvars = host_variables(cluster, host)
            state = states.get(host)
            if state:
                group = inventory.add_group("ray_lifecycle_" + state)
                inventory.add_host(host, group=group)
                hostvars["ray_lifecycle_state"] = state
            for name, value in hostvars.items():
                # Unsafe: Ansible never evaluates templates in data from the file (2.17+).
                inventory.set_variable(host, name, wrap_var(value))
            # Constructable sees the same variables the hosts got.
            hostvars = inventory.get_host(host).get_vars()
            self._set_composite_vars(self.get_option("compose"), hostvars, host, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), hostvars, host,
                                              strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hostvars, host,
                                           strict=strict)
