#!/usr/bin/python
# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Ensure a list of files and directories in one round trip, with check mode and diff."""

from __future__ import annotations

DOCUMENTATION = r"""
module: node_files
short_description: Ensure several files and directories in one call
description:
  - Brings each entry of O(files) to its content, owner, group and mode, in order, each only
    when it differs; files are replaced atomically (written to a temporary file of mode 0600
    in the same directory, then renamed).
  - One call for a step's files keeps a run with nothing to do short; it is what
    M(ansible.builtin.copy) with O(ansible.builtin.copy#module:content) and
    M(ansible.builtin.file) with C(state=directory) do, for a list.
  - With C(--diff) it shows each changed file's content before and after, except for entries
    given by O(files[].secret_content), whose content is never shown nor returned.
version_added: 0.1.0
author: onprem.ray maintainers (@onprem-ray)
options:
  files:
    description: The files and directories, in the order they are ensured (a directory before
      its files).
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: Absolute path, or C(~user/...).
        type: path
        required: true
      state:
        description: A file with O(files[].content) or O(files[].secret_content), or a directory.
        type: str
        choices: [file, directory]
        default: file
      content:
        description: The file's content.
        type: str
      secret_content:
        description: The file's content when it is a secret (a key, a token); never shown in a diff
          nor returned.
        type: str
      owner:
        description: The owner; unset leaves it as it is (root for a new file when run as root).
        type: str
      group:
        description: The group; unset means the owner's primary group.
        type: str
      mode:
        description: The mode as an octal string, for example C("0640").
        type: str
attributes:
  check_mode:
    description: Can run in check mode and return what would change.
    support: full
  diff_mode:
    description: Returns details on what changed (or would change) with C(--diff).
    support: full
"""

EXAMPLES = r"""
- name: Ray's start script and unit
  onprem.ray.node_files:
    files:
      - {path: /etc/ray, state: directory, owner: root, group: ray, mode: "0750"}
      - {path: /etc/ray/start-ray.sh, content: "{{ script }}", group: ray, mode: "0750"}
      - {path: /etc/systemd/system/onprem-ray.service, content: "{{ unit }}", mode: "0644"}
  become: true
  register: files
  notify: Restart Ray

- name: A private key (its content never shown)
  onprem.ray.node_files:
    files:
      - {path: ~admin/.ssh/pool_key, secret_content: "{{ key }}", owner: admin, mode: "0600"}
"""

RETURN = r"""
changed_paths:
  description: The paths that changed (in check mode, would change), in the order of O(files).
  returned: always
  type: list
  elements: str
  sample: [/etc/ray/start-ray.sh]
"""

import grp
import os
import pwd

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native, to_text
from ansible_collections.onprem.ray.plugins.module_utils.secret_files import write_atomic


class EntryError(Exception):
    """An entry could not be ensured; the message names the path."""


def ids(owner, group, check=False):
    """uid and gid to set (-1: leave as is); no group means the owner's primary group.
    In check mode an unknown user or group counts as a change to come (made earlier in the run)."""
    try:
        entry = pwd.getpwnam(owner) if owner else None
        gid = grp.getgrnam(group).gr_gid if group else (entry.pw_gid if entry else -1)
    except KeyError as err:
        if check:
            return -2, -2
        raise EntryError(f"unknown user or group: {to_native(err)}") from err
    return (entry.pw_uid if entry else -1), gid


def parse_mode(mode):
    if mode is None:
        return None
    try:
        value = int(mode, 8)
    except ValueError:
        raise EntryError(f"mode {mode!r} is not an octal number") from None
    if not 0 <= value <= 0o7777:
        raise EntryError(f"mode {mode!r} is out of range")
    return value


def meta_differs(st, uid, gid, mode):
    return ((uid != -1 and st.st_uid != uid) or (gid != -1 and st.st_gid != gid)
            or (mode is not None and st.st_mode & 0o7777 != mode))


def ensure_directory(path, uid, gid, mode, check):
    """(changed, diff) for a directory."""
    if os.path.isdir(path):
        if not meta_differs(os.stat(path), uid, gid, mode):
            return False, None
        before = "directory (other owner, group or mode)\n"
    elif os.path.lexists(path):
        raise EntryError("exists and is not a directory")
    else:
        before = "absent\n"
    if not check:
        os.makedirs(path, exist_ok=True)
        os.chown(path, uid, gid)
        os.chmod(path, 0o755 if mode is None else mode)
    return True, {"before": before, "after": "directory\n"}


def ensure_file(path, data, uid, gid, mode, check, secret):
    """(changed, diff) for a file holding `data`."""
    current = None
    if os.path.lexists(path):
        if os.path.isdir(path):
            raise EntryError("is a directory")
        with open(path, "rb") as f:
            current = f.read()
    if current == data and not meta_differs(os.stat(path), uid, gid, mode):
        return False, None
    if not check:
        if current != data:
            write_atomic(path, data, uid, gid, mode)
        else:
            os.chown(path, uid, gid)
            if mode is not None:
                os.chmod(path, mode)
    if secret:
        kept = "" if current != data else ", unchanged"
        diff = {"before": "(secret content not shown)\n" if current is not None else "",
                "after": f"(secret content not shown{kept})\n"}
    elif current is None or current != data:
        diff = {"before": to_text(current or b"", errors="surrogate_or_strict"),
                "after": to_text(data, errors="surrogate_or_strict")}
    else:
        diff = {"before": "(owner, group or mode differ)\n",
                "after": "(owner, group and mode set)\n"}
    return True, diff


def ensure(entry, check):
    """(changed, diff) for one entry; EntryError or OSError when it cannot be ensured."""
    path = entry["path"]
    if not os.path.isabs(path):
        raise EntryError("not an absolute path")
    uid, gid = ids(entry["owner"], entry["group"], check)
    mode = parse_mode(entry["mode"])
    if entry["state"] == "directory":
        changed, diff = ensure_directory(path, uid, gid, mode, check)
    else:
        secret = entry["secret_content"] is not None
        content = entry["secret_content"] if secret else (entry["content"] or "")
        changed, diff = ensure_file(path, content.encode("utf-8"), uid, gid, mode, check, secret)
    if diff is not None:
        diff.update(before_header=path, after_header=path)
    return changed, diff


def main():
    module = AnsibleModule(
        argument_spec={
            "files": {
                "type": "list", "elements": "dict", "required": True,
                "options": {
                    "path": {"type": "path", "required": True},
                    "state": {"type": "str", "choices": ["file", "directory"], "default": "file"},
                    "content": {"type": "str"},
                    "secret_content": {"type": "str", "no_log": True},
                    "owner": {"type": "str"},
                    "group": {"type": "str"},
                    "mode": {"type": "str"},
                },
                "mutually_exclusive": [["content", "secret_content"]],
            },
        },
        supports_check_mode=True,
    )
    changed_paths, diffs = [], []
    for entry in module.params["files"]:
        try:
            changed, diff = ensure(entry, module.check_mode)
        except EntryError as err:
            module.fail_json(msg=f"{entry['path']}: {to_native(err)}",
                             changed=bool(changed_paths), changed_paths=changed_paths)
        except OSError as err:
            module.fail_json(msg=f"{entry['path']}: {type(err).__name__}: {to_native(err)}",
                             changed=bool(changed_paths), changed_paths=changed_paths)
        if changed:
            changed_paths.append(entry["path"])
            diffs.append(diff)
    result = {"changed": bool(changed_paths), "changed_paths": changed_paths}
    if module._diff:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
