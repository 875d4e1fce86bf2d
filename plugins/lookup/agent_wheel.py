# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE)
"""Lookup onprem.ray.agent_wheel: the onprem-ray wheel the head installs the agent from."""

from __future__ import annotations

DOCUMENTATION = r"""
name: agent_wheel
version_added: 0.1.0
author:
  - onprem.ray maintainers (@onprem-ray)
short_description: The onprem-ray wheel for the head's agent, and the collections it needs
description:
  - Finds, on the controller, the onprem-ray wheel (the agent and this collection) that the
    head role installs, in this order; O(wheel) when given; built from O(source) when it is a
    checkout (it has C(pyproject.toml) and the agent's package), once per content, cached under
    O(cache) with fixed timestamps, so that the same sources give the same bytes; else
    C(onprem_ray-<version>-py3-none-any.whl) of O(wheelhouse).
  - Also finds the collections of O(collections) in Ansible's collections path, then on
    Python's path, and hashes their trees as the M(onprem.ray.node_facts) module does on the
    head, so that a copy is made only when they differ.
  - Runs in the controller's process, once per use; the head role calls it from a
    C(set_fact) task run once.
options:
  source:
    description: This collection's root on the controller (a checkout, or where it is installed).
    type: path
    required: true
  cache:
    description: Where wheels built from a checkout are kept, one directory per content.
    type: path
    required: true
  wheel:
    description: A built wheel to use as is (empty to find one).
    type: str
    default: ""
  wheelhouse:
    description: The directory holding C(onprem_ray-<version>-py3-none-any.whl) (empty for none).
    type: str
    default: ""
  version:
    description: The collection's version, the wheel's version.
    type: str
    required: true
  collections:
    description: Collections the agent's playbooks need besides this one.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: The onprem-ray wheel for the head
  ansible.builtin.set_fact:
    agent_wheel: >-
      {{ lookup('onprem.ray.agent_wheel', source=playbook_dir ~ '/..',
                cache='~/.cache/onprem-ray/wheels', version='0.1.0',
                collections=['ansible.posix']) }}
  run_once: true
"""

RETURN = r"""
_raw:
  description: One dictionary.
  type: list
  elements: dict
  contains:
    wheel:
      description: The wheel's path on the controller.
      type: str
    built:
      description: Whether this run built it.
      type: bool
    sha256:
      description: The wheel's SHA-256.
      type: str
    code:
      description: A hash of the code the agent's process imports (a change restarts the agent).
      type: str
    collections:
      description: Each collection's directory on the controller, or null when not found.
      type: dict
    trees:
      description: Each collection's tree hash, or null when not found.
      type: dict
"""

import sys

from ansible import constants
from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase
from ansible_collections.onprem.ray.plugins.plugin_utils.agent_wheel import (
    WheelError,
    agent_wheel,
)


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        if terms:
            raise AnsibleLookupError("onprem.ray.agent_wheel takes only keyword options")
        args = {name: self.get_option(name) for name in
                ("source", "cache", "wheel", "wheelhouse", "version", "collections")}
        try:
            found = agent_wheel(args, [*constants.COLLECTIONS_PATHS, *sys.path])
        except (WheelError, OSError) as err:
            raise AnsibleLookupError(f"the agent cannot be installed: {err}") from err
        return [found]
