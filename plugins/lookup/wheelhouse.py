# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE)
"""Lookup onprem.ray.wheelhouse: the directory of the wheelhouse a node installs Ray from."""

from __future__ import annotations

DOCUMENTATION = r"""
name: wheelhouse
version_added: 0.1.0
author:
  - onprem.ray maintainers (@onprem-ray)
short_description: The part of a wheelhouse that fits a node's Python, CPU and glibc
description:
  - Lists, on the controller, the wheelhouse O(root) and its directories, and returns the one
    to install from on a node with this Python, CPU architecture and glibc; the directory named
    C(cp<major><minor>-<arch>) (for example C(cp313-x86_64)) when there is one, else O(root)
    itself, and only when it holds a wheel of O(package) O(version) the node can install.
  - Otherwise returns an error naming what is missing and the C(pip download) command that
    builds it.
options:
  root:
    description: The wheelhouse on the controller.
    type: path
    required: true
  package:
    description: The package whose wheel must be there (extras are ignored).
    type: str
    required: true
  version:
    description: Its version.
    type: str
    required: true
  python:
    description: The node's Python version (for example C(3.13.5)).
    type: str
    required: true
  arch:
    description: The node's CPU architecture as C(uname -m) says it.
    type: str
    required: true
  glibc:
    description: The node's glibc version (for example C(2.41)); empty when unknown.
    type: str
    default: ""
  requirements:
    description: What the node installs, for the command that builds the missing directory.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: The wheelhouse directory for this node
  ansible.builtin.debug:
    msg: >-
      {{ lookup('onprem.ray.wheelhouse', root='wheels', package='ray[default]', version='2.60.0',
                python='3.13.5', arch='x86_64', glibc='2.41') }}
"""

RETURN = r"""
_raw:
  description: One dictionary.
  type: list
  elements: dict
  contains:
    dir:
      description: The directory to install from (empty when none fits).
      type: str
    error:
      description: Why none fits and what to run (empty when one does).
      type: str
"""

import os

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase
from ansible_collections.onprem.ray.plugins.plugin_utils.wheelhouse import choose


def _listing(root):
    """The file names of `root` ("") and of each of its directories."""
    listing = {"": []}
    for entry in sorted(os.listdir(root)):
        path = os.path.join(root, entry)
        if os.path.isdir(path):
            listing[entry] = sorted(os.listdir(path))
        else:
            listing[""].append(entry)
    return listing


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        if terms:
            raise AnsibleLookupError("onprem.ray.wheelhouse takes only keyword options")
        root = os.path.expanduser(self.get_option("root"))
        try:
            listing = _listing(root)
        except OSError as err:
            raise AnsibleLookupError(f"the wheelhouse {root} cannot be read: {err}") from err
        args = {name: self.get_option(name) for name in
                ("package", "version", "python", "arch", "glibc", "requirements")}
        return [choose(root, listing, **args)]
