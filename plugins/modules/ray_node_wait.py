#!/usr/bin/python
# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Wait until a node is ALIVE in Ray's GCS."""

from __future__ import annotations

DOCUMENTATION = r"""
module: ray_node_wait
short_description: Wait until a node is ALIVE in the Ray cluster
description:
  - Polls the head's GCS until a node with the address O(node_ip) is ALIVE, or fails after
    O(timeout) seconds saying what it last saw.
  - With O(start_unit), starts that systemd unit first (when it is not active), so that Ray's
    import in this module overlaps Ray's own start instead of following a task of its own.
  - Run it with the Ray venv's interpreter (C(ansible_python_interpreter)) and, with token
    authentication, C(RAY_AUTH_MODE) and C(RAY_AUTH_TOKEN_PATH) in the task's C(environment).
version_added: 0.1.0
author: onprem.ray maintainers (@onprem-ray)
requirements:
  - ray (the version the cluster runs)
options:
  gcs_address:
    description: The head's GCS, C(host:port).
    type: str
    required: true
  node_ip:
    description: The node's address in Ray (its C(--node-ip-address)).
    type: str
    required: true
  timeout:
    description: Seconds to wait, the GCS's port included.
    type: int
    default: 120
  start_unit:
    description:
      - A systemd unit running the node's Ray, started (C(systemctl start)) before the wait when
        it is not active. In check mode an inactive unit is reported as to be started, and not
        waited for.
      - Empty, the default, starts nothing.
    type: str
    default: ""
attributes:
  check_mode:
    description: Can run in check mode and return what would change.
    support: full
  diff_mode:
    description: Returns details on what changed (or would change) with C(--diff).
    support: none
"""

EXAMPLES = r"""
- name: Wait until this node is ALIVE in Ray
  onprem.ray.ray_node_wait:
    gcs_address: 10.0.0.10:6379
    node_ip: 10.0.0.11
  vars:
    ansible_python_interpreter: /opt/ray/venv/bin/python
  environment:
    RAY_AUTH_MODE: token
    RAY_AUTH_TOKEN_PATH: /etc/ray/auth_token
  become: true

- name: Start Ray's unit and wait until this node is ALIVE
  onprem.ray.ray_node_wait:
    gcs_address: 10.0.0.10:6379
    node_ip: 10.0.0.11
    start_unit: onprem-ray.service
  vars:
    ansible_python_interpreter: /opt/ray/venv/bin/python
  become: true
"""

RETURN = r"""
started:
  description: Whether O(start_unit) was started (in check mode, would be).
  returned: always
  type: bool
node:
  description: The node as Ray knows it.
  returned: success, unless check mode found O(start_unit) not active
  type: dict
  contains:
    node_id:
      description: Ray's node id (hex).
      type: str
    ip:
      description: The node's address.
      type: str
    is_head:
      description: Whether it is the head.
      type: bool
    resources:
      description: Its total resources.
      type: dict
    labels:
      description: Its labels.
      type: dict
"""

import importlib.util
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.onprem.ray.plugins.module_utils import ray_gcs

# Ray is imported only to ask the GCS: `import ray` alone costs about a second, and it fixes
# Ray's token settings for the whole process from the environment of that moment.
HAS_RAY = importlib.util.find_spec("ray") is not None


def wait_alive(client, ip, deadline, nodes=ray_gcs.alive_nodes, clock=time.monotonic,
               sleep=time.sleep):
    """(the node's info, None) once `ip` is ALIVE, else (None, the last error) at the deadline."""
    last = ""
    while True:
        try:
            found = nodes(client, ip)
        except Exception as err:  # pylint: disable=broad-except  # Ray raises several types while the GCS starts
            found, last = [], f"{type(err).__name__}: {err}"
        if found:
            return found[0], None
        if clock() >= deadline:
            return None, last
        sleep(0.2)


def start(module, unit):
    """Whether `unit` was started (in check mode: would be); fails the module when it cannot."""
    if not unit:
        return False
    systemctl = module.get_bin_path("systemctl", required=True)
    rc = module.run_command([systemctl, "is-active", "--quiet", unit])[0]
    if rc == 0:
        return False
    if not module.check_mode:
        rc, out, err = module.run_command([systemctl, "start", unit])
        if rc != 0:
            module.fail_json(msg=f"systemctl start {unit} failed: {(err or out).strip()}; see "
                                 f"`journalctl -u {unit}`", started=False)
    return True


def main():
    module = AnsibleModule(
        argument_spec={
            "gcs_address": {"type": "str", "required": True},
            "node_ip": {"type": "str", "required": True},
            "timeout": {"type": "int", "default": 120},
            "start_unit": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    if not HAS_RAY:
        module.fail_json(msg=f"{missing_required_lib('ray')} (run it with the Ray venv's python)")
    p = module.params
    address, ip, timeout = p["gcs_address"], p["node_ip"], p["timeout"]
    deadline = time.monotonic() + timeout
    started = start(module, p["start_unit"])
    if started and module.check_mode:
        module.exit_json(changed=True, started=True, msg=f"{p['start_unit']} would be started")
    try:
        client = ray_gcs.connect(address, timeout)
    except (ray_gcs.GcsUnreachable, ValueError) as err:
        module.fail_json(msg=f"{err}; Ray is not running there, or a firewall is in between",
                         changed=started, started=started)
    info, last = wait_alive(client, ip, deadline)
    if info is None:
        seen = f" (last error: {last})" if last else ""
        unit = p["start_unit"] or "<unit>"
        module.fail_json(msg=f"{ip} is not ALIVE in Ray at {address} after {timeout}s{seen}; see "
                             f"`journalctl -u {unit}` and /tmp/ray/session_latest/logs on the node",
                         changed=started, started=started)
    module.exit_json(changed=started, started=started, node=ray_gcs.describe(info))


if __name__ == "__main__":
    main()
