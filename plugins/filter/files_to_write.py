# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE)
"""Filter onprem.ray.files_to_write: the entries of an onprem.ray.node_files list that the
probe (onprem.ray.node_facts) found different, so that a step with nothing to write is
skipped without a round trip."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError


def _expected_group(entry: Mapping[str, Any], users: Mapping[str, Any]) -> str | None:
    """The group node_files would set: the given one, else the owner's primary group (None
    when the probe does not know the owner: then the entry counts as different)."""
    if entry.get("group"):
        return str(entry["group"])
    owner = entry.get("owner")
    return (users.get(owner) or {}).get("group") if owner else ""


def _differs(entry: Mapping[str, Any], found: Mapping[str, Any] | None,
             users: Mapping[str, Any]) -> bool:
    if not found or not found.get("exists"):
        return True
    group = _expected_group(entry, users)
    if group is None:
        return True
    mode = entry.get("mode")
    wanted = {"owner": entry.get("owner") or found.get("owner"),
              "group": group or found.get("group"),
              "mode": f"{int(str(mode), 8):04o}" if mode else found.get("mode")}
    if any(found.get(key) != value for key, value in wanted.items()):
        return True
    if entry.get("state", "file") == "directory":
        return not found.get("isdir")
    content = entry.get("secret_content")
    if content is None:
        content = entry.get("content") or ""
    # S324: compared with the SHA-1 the probe reports (Ansible's checksum), not a security use.
    return hashlib.sha1(str(content).encode("utf-8")).hexdigest() != found.get("sha1")  # noqa: S324


def files_to_write(files: Sequence[Mapping[str, Any]], probed: Mapping[str, Any],
                   users: Mapping[str, Any] | None = None) -> list[str]:
    """The paths of `files` (onprem.ray.node_files entries) that differ from what the probe
    found in `probed` (node_facts' `files`, keyed by path), in order; a path the probe did not
    look at counts as different."""
    try:
        return [str(entry["path"]) for entry in files
                if _differs(entry, probed.get(entry["path"]), users or {})]
    except (KeyError, TypeError, ValueError) as err:
        raise AnsibleFilterError(f"onprem.ray.files_to_write: not a list of node_files "
                                 f"entries and a probe's files: {err}") from err


class FilterModule:
    def filters(self):
        return {"files_to_write": files_to_write}
