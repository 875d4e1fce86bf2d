#!/usr/bin/python
# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Tell the head's agent which workers `up` starts Ray on (up's claim), and, as `up`'s last
step, that it has ended (with those of them it did not bring ALIVE: the release)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: up_claim
short_description: Tell the autoscaler agent which workers this run starts
description:
  - Run on the head before Ray is started on workers, so that C(up) and the agent never both
    start a worker. Writes the claim (the addresses, an id, the time) to C(up-claim.json) in
    the agent's state directory; the agent then never adds those machines, records them
    joining, and joined when Ray lists them ALIVE. A claim expires after the agent's
    C(provision_timeout_s).
  - A worker already in one of the agent's add or retire runs stays the agent's until that run
    ends; the module waits for those runs (at most O(timeout)), then claims. It checks and
    writes holding the claim lock the agent holds for each of its iterations.
  - Creates the state directory (mode 0700, owned by O(owner)) when the agent is not installed
    yet (the first C(up)); the agent reads the claim when it starts.
  - The claim stays open while C(up) runs, and the agent does not retire the workers it names
    as idle meanwhile, since C(up) may still be waiting for them. It ends with
    O(state=ended), or expires C(provision_timeout_s) after it was written.
  - With O(state=ended), run last by C(up) whether it succeeded or failed, marks the claim
    O(claim_id) ended, under the same lock, with O(ips) (the claimed workers this run did not
    bring ALIVE, that failed a step or its wait; possibly none) released. The agent then
    retires idle workers as usual, and records each released one it holds joining under that
    claim spare again at once, with no failure counted (C(up) reports that failure), unless
    Ray lists it ALIVE; one it has not recorded under the claim yet is never claimed. The end
    of a claim that a newer one has replaced changes nothing (the newer claim decides); the
    end of one the agent has removed (it expired) writes only its release, if any.
version_added: 0.1.0
author: onprem.ray maintainers (@onprem-ray)
options:
  ips:
    description:
      - The workers' addresses (as the cluster file names them) that this run starts.
      - With O(state=ended), those of them this run did not bring ALIVE (may be empty).
    type: list
    elements: str
    required: true
  state:
    description:
      - V(present) claims O(ips); V(ended) ends the claim O(claim_id), releasing O(ips).
      - V(released) is the former name of V(ended), kept for playbooks that use it; it ends
        the claim too.
    type: str
    choices: [present, ended, released]
    default: present
  claim_id:
    description: The claim to end (RV(claim_id) of the claim); required with O(state=ended)
      and O(state=released).
    type: str
  state_dir:
    description: The agent's state directory (role variable C(head_agent_state_dir)).
    type: path
    default: /var/lib/onprem-ray/agent
  owner:
    description: The user the agent runs as, who owns the state directory and the claim.
    type: str
    default: root
  timeout:
    description: Seconds to wait for the agent's runs on these workers to end (claims only).
    type: int
    default: 900
attributes:
  check_mode:
    description: Can run in check mode and return what would change.
    support: full
  diff_mode:
    description: Returns details on what changed (or would change) with C(--diff).
    support: none
"""

EXAMPLES = r"""
- name: Tell the agent which workers this run starts
  onprem.ray.up_claim:
    ips: [10.0.0.11, 10.0.0.12]
    owner: debian
  delegate_to: 10.0.0.10
  run_once: true
  become: true
  register: up_claim

- name: End the claim; release the claimed workers this run did not bring ALIVE
  onprem.ray.up_claim:
    state: ended
    claim_id: "{{ up_claim.claim_id }}"
    ips: [10.0.0.12]
    owner: debian
  delegate_to: 10.0.0.10
  run_once: true
  become: true
"""

RETURN = r"""
claim_id:
  description: The claim's id (C(up-<time>-<random>)); the agent records it as the claimed
    machines' request id.
  returned: changed, or O(state=ended)
  type: str
waited_for:
  description: The agent's runs this run waited for, by worker address.
  returned: O(state=present)
  type: dict
released:
  description: The addresses the claim has released, these and earlier ones (empty when a
    newer claim replaced it, or there is no state directory).
  returned: O(state=ended)
  type: list
  elements: str
ended:
  description: Whether the claim holds nothing any more (ended now or before, or removed by
    the agent); false when a newer claim replaced it, or there is no state directory.
  returned: O(state=ended)
  type: bool
"""

import os
import pwd
import secrets
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.onprem.ray.plugins.module_utils import agent_claims

POLL_S = 2.0
LOCK_TIMEOUT_S = 120.0


def ensure_state_dir(path, owner, check):
    """(created, uid, gid): the directory exists, owned by `owner` (made 0700 if missing)."""
    user = pwd.getpwnam(owner)
    if os.path.isdir(path):
        stat = os.stat(path)
        return False, stat.st_uid, stat.st_gid
    if not check:
        os.makedirs(path, mode=0o700)
        os.chown(path, user.pw_uid, user.pw_gid)
    return True, user.pw_uid, user.pw_gid


def end(module, ips):
    """End the claim module.params['claim_id'], releasing `ips` (state=ended).

    The claim file is rewritten while the agent still has it (the claim is open): the released
    addresses leave its ips, so the agent never claims them, and it is marked ended, so the
    agent lets go of the rest and then removes it. When the agent has removed it (expired), a
    file with the release alone (ended, no ips) is written if there is one to tell. A newer
    claim in the file is left as it is."""
    state_dir, claim_id = module.params["state_dir"], module.params["claim_id"]
    if not claim_id.startswith("up-"):
        module.fail_json(msg=f"claim_id {claim_id!r} is no claim of up (up-<time>-<random>)")
    if not os.path.isdir(state_dir):  # no claim was ever written here
        module.exit_json(changed=False, claim_id=claim_id, released=[], ended=False)
    stat = os.stat(state_dir)
    path = os.path.join(state_dir, agent_claims.CLAIM_FILE)
    try:
        with agent_claims.locked(state_dir, LOCK_TIMEOUT_S, stat.st_uid, stat.st_gid):
            current = agent_claims.read_json(path)
            if current is not None and current.get("claim_id") != claim_id:
                module.exit_json(changed=False, claim_id=claim_id, released=[], ended=False,
                                 msg=f"the claim {current.get('claim_id')} of a later up "
                                     "replaced this one: it decides")
            if current is None:  # the agent removed it: it holds nothing but a release
                if not ips:
                    module.exit_json(changed=False, claim_id=claim_id, released=[],
                                     ended=True)
                current = {"claim_id": claim_id, "at": time.time(), "ips": []}
            after = sorted(set(current.get("released") or []) | set(ips))
            kept = sorted(set(current.get("ips") or []) - set(after))
            ended = dict(current, ips=kept, released=after, ended=True)
            changed = ended != current
            if changed and not module.check_mode:
                agent_claims.write_json(path, ended, stat.st_uid, stat.st_gid)
    except agent_claims.LockTimeout as err:
        module.fail_json(msg=f"the agent holds its claim lock too long: {err}; is it stuck? "
                             "(journalctl -u onprem-ray-agent)")
    except (OSError, TypeError, ValueError) as err:
        module.fail_json(msg=f"the end of claim {claim_id} in {state_dir} cannot be "
                             f"written: {err}")
    module.exit_json(changed=changed, claim_id=claim_id, released=after, ended=True)


def main():
    module = AnsibleModule(
        argument_spec={
            "ips": {"type": "list", "elements": "str", "required": True},
            "state": {"type": "str", "choices": ["present", "ended", "released"],
                      "default": "present"},
            "claim_id": {"type": "str"},
            "state_dir": {"type": "path", "default": "/var/lib/onprem-ray/agent"},
            "owner": {"type": "str", "default": "root"},
            "timeout": {"type": "int", "default": 900},
        },
        required_if=[("state", "ended", ["claim_id"]), ("state", "released", ["claim_id"])],
        supports_check_mode=True,
    )
    ips = sorted(set(module.params["ips"]))
    if module.params["state"] in ("ended", "released"):  # released: the former name
        end(module, ips)
    state_dir = module.params["state_dir"]
    try:
        created, uid, gid = ensure_state_dir(state_dir, module.params["owner"],
                                             module.check_mode)
    except (KeyError, OSError) as err:
        module.fail_json(msg=f"the agent's state directory {state_dir} (owner "
                             f"{module.params['owner']}) cannot be made: {err}")
    if not ips or (created and module.check_mode):
        module.exit_json(changed=bool(ips), waited_for={})
    deadline = time.monotonic() + module.params["timeout"]
    waited = {}
    while True:
        try:
            with agent_claims.locked(state_dir, LOCK_TIMEOUT_S, uid, gid):
                busy = {ip: run for ip, run in agent_claims.agent_runs(state_dir).items()
                        if ip in ips}
                if not busy:
                    claim = {"claim_id": f"up-{int(time.time())}-{secrets.token_hex(4)}",
                             "at": time.time(), "ips": ips}
                    if not module.check_mode:
                        agent_claims.write_json(
                            os.path.join(state_dir, agent_claims.CLAIM_FILE), claim, uid, gid)
                    module.exit_json(changed=True, claim_id=claim["claim_id"],
                                     waited_for=waited)
        except agent_claims.LockTimeout as err:
            module.fail_json(msg=f"the agent holds its claim lock too long: {err}; is it stuck? "
                                 "(journalctl -u onprem-ray-agent)")
        except (OSError, ValueError) as err:
            module.fail_json(msg=f"the claim in {state_dir} cannot be written: {err}")
        waited.update(busy)
        if time.monotonic() >= deadline:
            module.fail_json(
                msg="workers still in a run of the agent after "
                    f"{module.params['timeout']}s: "
                    + ", ".join(f"{ip} (run {run})" for ip, run in sorted(busy.items()))
                    + "; Ray was started on no worker: see `onprem-ray-agent status` on the "
                    "head, then run up again", waited_for=waited)
        time.sleep(POLL_S)


if __name__ == "__main__":
    main()
