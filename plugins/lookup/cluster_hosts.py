# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE)
"""Lookup onprem.ray.cluster_hosts: a play's host pattern, refused when the cluster is missing."""

from __future__ import annotations

DOCUMENTATION = r"""
name: cluster_hosts
version_added: 0.1.0
author:
  - onprem.ray maintainers (@onprem-ray)
short_description: A play's host pattern, after checking the inventory holds the cluster
description:
  - Returns the host pattern given, when every group of O(require) has a host.
  - Otherwise fails, naming the empty groups and, for each cluster file among the inventory
    sources that did not parse, its path and every reason it was refused. Ansible skips such a
    source with a warning (unless C(any_unparsed_is_failed) is set), and a playbook would
    otherwise match no host and succeed.
  - Used in the C(hosts) of the first play of the collection's playbooks, so that they stop
    before any play runs, whatever C(ansible.cfg) says.
  - With C(ansible-playbook --syntax-check), which checks the playbook and not the inventory,
    the pattern is returned unchecked.
options:
  _terms:
    description: The host pattern to return.
    type: str
    required: true
  require:
    description: Groups that must have at least one host.
    type: list
    elements: str
    default: [ray_head]
"""

EXAMPLES = r"""
- name: Ray head
  hosts: "{{ lookup('onprem.ray.cluster_hosts', 'ray_head') }}"
  tasks: []

- name: Check the hosts to act on
  hosts: "{{ lookup('onprem.ray.cluster_hosts', 'all', require=['ray_head', 'ray_workers']) }}"
  tasks: []
"""

RETURN = r"""
_raw:
  description: The host pattern given.
  type: list
  elements: str
"""

from ansible import context
from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase
from ansible_collections.onprem.ray.plugins.plugin_utils.inventory_check import (
    missing_groups_message,
)


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        if len(terms) != 1:
            raise AnsibleLookupError("onprem.ray.cluster_hosts takes one host pattern")
        if context.CLIARGS.get("syntax"):  # --syntax-check checks the playbook, not the inventory
            return [str(terms[0])]
        variables = variables or {}
        message = missing_groups_message(variables.get("groups", {}),
                                         self.get_option("require"),
                                         variables.get("ansible_inventory_sources", ()))
        if message:
            raise AnsibleLookupError(message)
        return [str(terms[0])]
