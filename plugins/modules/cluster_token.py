#!/usr/bin/python
# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Ensure Ray's cluster token: generated once, never overwritten, never returned."""

from __future__ import annotations

DOCUMENTATION = r"""
module: cluster_token
short_description: Ensure the Ray cluster's authentication token on a machine
description:
  - Ensures the token file of Ray's token authentication (C(RAY_AUTH_TOKEN_PATH)) with its
    owner, group and mode, and copies of it (for example for the SSH login user).
  - Without O(token), a missing token is generated in Ray's own format (256 random bits as 64
    hexadecimal characters, as C(ray get-auth-token --generate) makes), and an existing one is
    never overwritten. With O(token), the file is made to hold it.
  - The token is never returned nor shown in a diff; the diff says only whether it is created,
    replaced or kept.
version_added: 0.1.0
author: onprem.ray maintainers (@onprem-ray)
options:
  path:
    description: The token file.
    type: path
    required: true
  token:
    description:
      - The token to hold (the head's, for a worker; an operator's own).
      - Unset, the file is kept as it is, or generated when missing (unless O(generate=false)).
    type: str
  generate:
    description:
      - Generate a token when O(path) is missing and O(token) is unset.
      - False makes a missing token an error.
    type: bool
    default: true
  owner:
    description: Owner of the token file.
    type: str
  group:
    description: Group of the token file; unset means the owner's primary group.
    type: str
  mode:
    description: Mode of the token file.
    type: str
    default: "0600"
  copies:
    description:
      - Further files that hold the same token, each with its owner, group and mode.
      - A missing parent directory is made with mode 0700 for the copy's owner.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: The copy (C(~user/) expanded).
        type: path
        required: true
      owner:
        description: Owner of the copy (and of a parent directory made for it).
        type: str
      group:
        description: Group of the copy; unset means the owner's primary group.
        type: str
      mode:
        description: Mode of the copy.
        type: str
        default: "0600"
attributes:
  check_mode:
    description: Can run in check mode and return what would change.
    support: full
  diff_mode:
    description: Returns details on what changed (or would change) with C(--diff).
    support: full
notes:
  - The module hides O(token) in its own result; a task that reads the token from elsewhere
    (M(ansible.builtin.slurp)) needs C(no_log) itself.
"""

EXAMPLES = r"""
- name: The head's token, generated once
  onprem.ray.cluster_token:
    path: /etc/ray/auth_token
    owner: ray
    copies:
      - {path: ~admin/.ray/auth_token, owner: admin}
  become: true

- name: A worker's copy of the head's token
  onprem.ray.cluster_token:
    path: /etc/ray/auth_token
    token: "{{ head_token }}"
    owner: ray
  become: true
"""

RETURN = r"""
changed_paths:
  description: The token file and copies that changed (in check mode, would change).
  returned: always
  type: list
  elements: str
generated:
  description: Whether a new token was (in check mode, would be) generated.
  returned: always
  type: bool
"""

import grp
import os
import pwd
import secrets

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.onprem.ray.plugins.module_utils.secret_files import write_atomic


def new_token():
    """Ray's own format (ray get-auth-token --generate): 256 random bits as hex."""
    return secrets.token_hex(32)


def read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def ids(owner, group, check):
    try:
        entry = pwd.getpwnam(owner) if owner else None
        gid = grp.getgrnam(group).gr_gid if group else (entry.pw_gid if entry else -1)
    except KeyError as err:
        if check:  # made earlier in this (checked) run
            return -2, -2
        raise ValueError(f"unknown user or group: {to_native(err)}") from err
    return (entry.pw_uid if entry else -1), gid


def ensure_file(path, data, owner, group, mode, check, make_parent=False):
    """Whether `path` changed (would change) to hold `data` with its owner, group and mode."""
    uid, gid = ids(owner, group, check)
    mode = int(mode, 8)
    parent = os.path.dirname(path)
    if make_parent and not os.path.isdir(parent):
        if not check:
            os.makedirs(parent, mode=0o700)
            os.chown(parent, uid, gid)
        return_changed = True
    else:
        return_changed = False
    current = read_bytes(path)
    if current == data:
        st = os.stat(path)
        if (uid in (-1, st.st_uid)) and (gid in (-1, st.st_gid)) and st.st_mode & 0o7777 == mode:
            return return_changed
        if not check:
            os.chown(path, uid, gid)
            os.chmod(path, mode)
        return True
    if not check:
        write_atomic(path, data, uid, gid, mode)
    return True


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "token": {"type": "str", "no_log": True},
            "generate": {"type": "bool", "default": True},
            "owner": {"type": "str"},
            "group": {"type": "str"},
            "mode": {"type": "str", "default": "0600"},
            "copies": {"type": "list", "elements": "dict", "default": [], "options": {
                "path": {"type": "path", "required": True},
                "owner": {"type": "str"},
                "group": {"type": "str"},
                "mode": {"type": "str", "default": "0600"},
            }},
        },
        supports_check_mode=True,
    )
    params = module.params
    path = params["path"]
    current = read_bytes(path)
    generated = False
    if params["token"] is not None:
        token = params["token"].strip()
        if not token:
            module.fail_json(msg=f"{path}: the token given is empty")
    elif current is not None and current.strip():
        token = current.decode("utf-8", "replace").strip()
    elif params["generate"]:
        token, generated = new_token(), True
    else:
        module.fail_json(msg=f"{path}: no token there, and none given (generate=false)")
    module.no_log_values.add(token)
    data = token.encode("utf-8")
    if current is not None and current.strip() == data:
        data = current  # kept byte for byte (a trailing newline of a file made by Ray)
    changed_paths = []
    try:
        check = module.check_mode
        if ensure_file(path, data, params["owner"], params["group"], params["mode"], check):
            changed_paths.append(path)
        for copy in params["copies"]:
            if ensure_file(copy["path"], data, copy["owner"], copy["group"], copy["mode"], check,
                           make_parent=True):
                changed_paths.append(copy["path"])
    except (OSError, ValueError) as err:
        module.fail_json(msg=f"{path}: {type(err).__name__}: {to_native(err)}",
                         changed_paths=changed_paths)
    result = {"changed": bool(changed_paths), "changed_paths": changed_paths,
              "generated": generated}
    if module._diff:
        what = "generated" if generated else "written, or owner, group or mode set"
        result["diff"] = [{"before_header": p, "after_header": p, "before": "(token not shown)\n",
                           "after": f"(token not shown: {what})\n"} for p in changed_paths]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
