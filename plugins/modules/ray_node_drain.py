#!/usr/bin/python
# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Drain a Ray node through the head's GCS, then stop its unit."""

from __future__ import annotations

DOCUMENTATION = r"""
module: ray_node_drain
short_description: Drain a node of the Ray cluster through the head's GCS
description:
  - Asks the head's GCS to drain the ALIVE node with the address O(node_ip), waits until Ray
    has let it go (or O(timeout) passes), then stops O(stop_unit) at once (a drained raylet
    exits, and systemd would start it again).
  - A drain Ray refuses (with O(reason=idle), a node that has work) fails with Ray's reason
    and leaves the node running. The head is never drained.
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
    description: The node's address in Ray.
    type: str
    required: true
  reason:
    description:
      - C(idle) lets Ray refuse when the node has work; C(preemption) makes Ray stop placing
        work there and drain it within O(timeout).
    type: str
    choices: [idle, preemption]
    default: idle
  timeout:
    description: Seconds Ray gets to drain the node (its drain deadline).
    type: int
    default: 300
  drain_message:
    description: The reason recorded with the drain in Ray.
    type: str
    default: onprem.ray
  stop_unit:
    description: A systemd unit stopped once the node is drained (empty for none).
    type: str
    default: ""
  stop_at_deadline:
    description: When the node still has work at the deadline, stop O(stop_unit) anyway (true),
      or fail and leave it running (false).
    type: bool
    default: true
attributes:
  check_mode:
    description: Can run in check mode and return what would change.
    support: full
    details: Says whether the node would be drained; asks Ray nothing else.
  diff_mode:
    description: Returns details on what changed (or would change) with C(--diff).
    support: none
"""

EXAMPLES = r"""
- name: Drain this worker and stop Ray
  onprem.ray.ray_node_drain:
    gcs_address: 10.0.0.10:6379
    node_ip: 10.0.0.11
    reason: idle
    timeout: 300
    stop_unit: onprem-ray.service
  vars:
    ansible_python_interpreter: /opt/ray/venv/bin/python
  environment:
    RAY_AUTH_MODE: token
    RAY_AUTH_TOKEN_PATH: /etc/ray/auth_token
  become: true
"""

RETURN = r"""
drained:
  description: Whether Ray drained the node (false when it was not in Ray, or still had work at
    the deadline).
  returned: success
  type: bool
node:
  description: The node as Ray knew it (node_id, ip, is_head, resources, labels).
  returned: when the node was in Ray
  type: dict
"""

import importlib.util
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.onprem.ray.plugins.module_utils import ray_gcs

# Ray is imported only to ask the GCS: `import ray` alone costs about a second, and it fixes
# Ray's token settings for the whole process from the environment of that moment.
HAS_RAY = importlib.util.find_spec("ray") is not None


def reason_code(reason):
    from ray.core.generated import autoscaler_pb2  # pylint: disable=import-error

    return {"idle": autoscaler_pb2.DRAIN_NODE_REASON_IDLE_TERMINATION,
            "preemption": autoscaler_pb2.DRAIN_NODE_REASON_PREEMPTION}[reason]


def as_text(why):
    if isinstance(why, bytes):
        why = why.decode("utf-8", "replace")
    return str(why)


def wait_gone(client, ip, deadline, nodes=ray_gcs.alive_nodes, clock=time.monotonic,
              sleep=time.sleep):
    """Whether Ray let `ip` go before the deadline (asked every 0.1 s: one small call to the
    GCS, and the retire's end is the agent's scale-down latency)."""
    while clock() < deadline:
        if not nodes(client, ip):
            return True
        sleep(0.1)
    return False


def stop(module, unit):
    if unit:
        module.run_command(["systemctl", "stop", unit])


def main():
    module = AnsibleModule(
        argument_spec={
            "gcs_address": {"type": "str", "required": True},
            "node_ip": {"type": "str", "required": True},
            "reason": {"type": "str", "choices": ["idle", "preemption"], "default": "idle"},
            "timeout": {"type": "int", "default": 300},
            "drain_message": {"type": "str", "default": "onprem.ray"},
            "stop_unit": {"type": "str", "default": ""},
            "stop_at_deadline": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    if not HAS_RAY:
        module.fail_json(msg=f"{missing_required_lib('ray')} (run it with the Ray venv's python)")
    p = module.params
    ip, timeout = p["node_ip"], p["timeout"]
    try:
        client = ray_gcs.connect(p["gcs_address"], 10)
        found = ray_gcs.alive_nodes(client, ip)
    except (ray_gcs.GcsUnreachable, ValueError) as err:
        module.fail_json(msg=str(err))
    if not found:
        module.exit_json(changed=False, drained=False, msg=f"{ip} is not in Ray")
    info = found[0]
    node = ray_gcs.describe(info)
    if info.is_head_node:
        module.fail_json(msg=f"{ip} is the head: the head is never drained", node=node)
    if module.check_mode:
        module.exit_json(changed=True, drained=False, node=node, msg=f"{ip} would be drained")
    deadline_ms = int((time.time() + timeout) * 1000)
    # The node id goes as hex: the GCS decodes it with FromHex (a binary id is silently ignored).
    accepted, why = client.drain_node(info.node_id.hex(), reason_code(p["reason"]),
                                      p["drain_message"], deadline_ms)
    if not accepted:
        module.fail_json(msg=f"Ray refused to drain {ip} (node {node['node_id']}): {as_text(why)}; "
                             "the node keeps running", node=node)
    if wait_gone(client, ip, time.monotonic() + timeout):
        stop(module, p["stop_unit"])
        module.exit_json(changed=True, drained=True, node=node)
    if p["stop_at_deadline"]:
        stop(module, p["stop_unit"])
        module.exit_json(changed=True, drained=False, node=node,
                         msg=f"{ip} still had work after {timeout}s; stopped it")
    module.fail_json(msg=f"{ip} did not finish draining within {timeout}s; it keeps running",
                     node=node)


if __name__ == "__main__":
    main()
