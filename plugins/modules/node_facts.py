#!/usr/bin/python
# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Everything the onprem.ray roles need to know about a machine, in one round trip."""

from __future__ import annotations

DOCUMENTATION = r"""
module: node_facts
short_description: Probe a machine for the onprem.ray roles
description:
  - Reports, in one call, what the roles decide on before changing anything, so that steps
    with nothing to do are skipped without a round trip.
  - The OS, systemd, the Python that creates Ray's venv (version, whether C(venv) works),
    whether C(rsync) is installed, the Ray version in the venv and the requirements recorded
    there, units, ports in use, users, recorded command hashes, files and directory trees.
  - Reads only; changes nothing.
version_added: 0.1.0
author: onprem.ray maintainers (@onprem-ray)
options:
  python:
    description: The interpreter that creates Ray's venv; its version and venv support are reported
      (empty string, not probed).
    type: path
    default: /usr/bin/python3
  venv:
    description: Ray's virtual environment.
    type: path
    default: /opt/ray/venv
  requirements_file:
    description: A file whose content is reported as RV(requirements) (what the venv holds).
    type: path
  units:
    description: systemd units whose active and enabled states are reported.
    type: list
    elements: str
    default: []
  ports:
    description: TCP ports reported in RV(ports_in_use) when something listens there (0 is ignored).
    type: list
    elements: int
    default: []
  state_dir:
    description: A directory of C(<name>.sha256) files, reported as RV(commands_state).
    type: path
  paths:
    description:
      - Paths whose existence, kind, mode, owner, group and SHA-1 are reported, keyed by the
        path (C(~user/) expanded).
    type: list
    elements: path
    default: []
  users:
    description: Users whose existence, home, shell and primary group are reported.
    type: list
    elements: str
    default: []
  known_hosts:
    description: A known_hosts file (C(~user/) expanded) whose lines are reported.
    type: path
  trees:
    description: Directories whose SHA-256 over relative paths and contents (Python caches left
      out) is reported.
    type: list
    elements: path
    default: []
  read:
    description: Small files reported whole (up to 64 KiB), such as a public key or
      C(authorized_keys); never a secret, since the result is not hidden.
    type: list
    elements: path
    default: []
  connect:
    description:
      - C(host:port) addresses (an IPv6 host in brackets) tried once each from this machine,
        with a TCP connection of at most one second, reported in RV(reachable); for example the
        head's GCS, so that a later wait for it can be skipped where it answers already.
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    description: Can run in check mode and return what would change.
    support: full
  diff_mode:
    description: Returns details on what changed (or would change) with C(--diff).
    support: none
"""

EXAMPLES = r"""
- name: Probe the machine
  onprem.ray.node_facts:
    python: /usr/bin/python3
    venv: /opt/ray/venv
    units: [onprem-ray.service]
    ports: [6379, 8265]
    users: [ray]
  register: node

- name: Refuse a machine without systemd
  ansible.builtin.assert:
    that: node.systemd
"""

RETURN = r"""
os_id:
  description: ID of /etc/os-release.
  returned: always
  type: str
  sample: debian
os_version:
  description: VERSION_ID of /etc/os-release.
  returned: always
  type: str
  sample: "12"
os_like:
  description: ID_LIKE of /etc/os-release.
  returned: always
  type: str
arch:
  description: The CPU architecture, as C(uname -m) says it.
  returned: always
  type: str
  sample: x86_64
glibc:
  description: The C library's version when it is glibc, else empty.
  returned: always
  type: str
  sample: "2.36"
python:
  description: Version of O(python) (empty when it does not run).
  returned: always
  type: str
  sample: 3.11.2
python_venv:
  description: Whether O(python) can create a venv with pip (Debian's C(python3-venv) installed).
  returned: always
  type: bool
rsync:
  description: Whether C(rsync) is on the PATH.
  returned: always
  type: bool
systemd:
  description: Whether systemd runs as the init system.
  returned: always
  type: bool
venv_python:
  description: Whether the venv's python exists.
  returned: always
  type: bool
ray_version:
  description: The Ray version installed in the venv, or null.
  returned: always
  type: str
requirements:
  description: Content of O(requirements_file), or null.
  returned: always
  type: str
units:
  description: For each of O(units), C(active) and C(enabled).
  returned: always
  type: dict
ports_in_use:
  description: The O(ports) something listens on.
  returned: always
  type: list
  elements: int
commands_state:
  description: Name to recorded hash, from O(state_dir).
  returned: always
  type: dict
files:
  description: For each of O(paths) (C(~user/) expanded), C(exists) and, when it does, C(isdir),
    C(mode), C(owner), C(group), C(sha1).
  returned: always
  type: dict
users:
  description: For each of O(users), C(exists), C(home), C(shell), C(group).
  returned: always
  type: dict
host_key:
  description: The machine's ed25519 SSH host key (type and key), or an empty string.
  returned: always
  type: str
known_hosts:
  description: Lines of O(known_hosts).
  returned: always
  type: list
  elements: str
contents:
  description: For each of O(read) (C(~user/) expanded), its text, or null when it cannot be read
    or is larger than 64 KiB.
  returned: always
  type: dict
trees:
  description: For each of O(trees), its SHA-256, or null when it is not a directory.
  returned: always
  type: dict
reachable:
  description: For each of O(connect), whether it accepted a TCP connection.
  returned: always
  type: dict
  sample: {"10.0.0.10:6379": true}
"""

import glob
import grp
import hashlib
import os
import pwd
import shutil
import socket
import stat
import subprocess

from ansible.module_utils.basic import AnsibleModule

# Run by O(python): its version, and whether `python -m venv` would get pip (ensurepip).
PYTHON_PROBE = ("import sys, importlib.util as u; "
                "print('.'.join(map(str, sys.version_info[:3]))); "
                "print(bool(u.find_spec('venv') and u.find_spec('ensurepip')))")


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def read_small(path, limit=65536):
    """The text of a small file, or None (missing, unreadable, larger than `limit` bytes)."""
    try:
        if os.path.getsize(path) > limit:
            return None
    except OSError:
        return None
    return read(path)


def os_release():
    out = {}
    for line in (read("/etc/os-release") or "").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep:
            out[key.lower()] = value.strip('"')
    return out


def glibc_version():
    """The glibc version ("2.36"), or "" on another C library (manylinux wheels need glibc)."""
    try:
        words = (os.confstr("CS_GNU_LIBC_VERSION") or "").split()
    except (ValueError, OSError):
        return ""
    return words[1] if len(words) == 2 and words[0] == "glibc" else ""


def python_info(python):
    """(version, venv works) of `python`; ('', False) when it does not run."""
    try:
        result = subprocess.run([python, "-c", PYTHON_PROBE], capture_output=True, text=True,
                                check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "", False
    lines = result.stdout.split()
    if result.returncode != 0 or len(lines) != 2:
        return "", False
    return lines[0], lines[1] == "True"


def listening_ports(tables=("/proc/net/tcp", "/proc/net/tcp6")):
    ports = set()
    for table in tables:
        for line in (read(table) or "").splitlines()[1:]:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def installed_version(venv, dist):
    pattern = os.path.join(venv, "lib", "python3*", "site-packages", dist + "-*.dist-info")
    for info in sorted(glob.glob(pattern)):
        version = os.path.basename(info)[len(dist) + 1:-len(".dist-info")]
        if version and os.path.exists(os.path.join(info, "METADATA")):
            return version
    return None


def name_of(lookup, ident):
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def stat_path(path):
    """Existence, kind, mode, owner, group and, for a file, SHA-1 (Ansible's checksum)."""
    try:
        st = os.stat(path)
    except OSError:
        return {"exists": False}
    out = {"exists": True, "isdir": stat.S_ISDIR(st.st_mode), "mode": f"{st.st_mode & 0o7777:04o}",
           "owner": name_of(pwd.getpwuid, st.st_uid), "group": name_of(grp.getgrgid, st.st_gid)}
    if stat.S_ISREG(st.st_mode):
        digest = hashlib.sha1()  # noqa: S324 - compared with Ansible's own checksums
        try:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            out["sha1"] = digest.hexdigest()
        except OSError:
            out["sha1"] = None
    return out


def tree_hash(root):
    """SHA-256 over the relative paths and contents of the files under `root`, Python caches
    left out: the same on the controller and on the node when the trees are the same."""
    if not os.path.isdir(root):
        return None
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".pyc"):
                continue
            path = os.path.join(dirpath, name)
            digest.update(os.path.relpath(path, root).encode() + b"\0")
            with open(path, "rb") as f:
                digest.update(f.read())
            digest.update(b"\0")
    return digest.hexdigest()


def user_info(name):
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return {"exists": False}
    return {"exists": True, "home": entry.pw_dir, "shell": entry.pw_shell,
            "group": name_of(grp.getgrgid, entry.pw_gid)}


def unit_state(name, systemd):
    if not systemd:
        return {"active": False, "enabled": False}

    def ask(verb):
        result = subprocess.run(["systemctl", verb, name], capture_output=True, text=True,
                                check=False)
        return result.stdout.strip()
    return {"active": ask("is-active") == "active", "enabled": ask("is-enabled") == "enabled"}


def reachable(address, timeout=1.0, connect=socket.create_connection):
    """Whether `address` ('host:port', IPv6 bracketed) accepts a TCP connection now."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return False
    try:
        connect((host.strip("[]"), int(port)), timeout=timeout).close()
    except (OSError, ValueError):
        return False
    return True


def commands_state(state_dir):
    if not state_dir:
        return {}
    return {os.path.basename(path)[:-len(".sha256")]: (read(path) or "").strip()
            for path in glob.glob(os.path.join(state_dir, "*.sha256"))}


def probe(params):
    release = os_release()
    systemd = os.path.isdir("/run/systemd/system")
    version, venv_ok = python_info(params["python"]) if params["python"] else ("", False)
    listening = listening_ports()
    known = read(params["known_hosts"]) if params["known_hosts"] else None
    host_key = read("/etc/ssh/ssh_host_ed25519_key.pub") or ""
    return {
        "os_id": release.get("id", ""),
        "os_like": release.get("id_like", ""),
        "os_version": release.get("version_id", ""),
        "arch": os.uname().machine,
        "glibc": glibc_version(),
        "python": version,
        "python_venv": venv_ok,
        "rsync": shutil.which("rsync") is not None,
        "systemd": systemd,
        "venv_python": os.access(os.path.join(params["venv"], "bin", "python"), os.X_OK),
        "ray_version": installed_version(params["venv"], "ray"),
        "requirements": read(params["requirements_file"]) if params["requirements_file"] else None,
        "units": {unit: unit_state(unit, systemd) for unit in params["units"]},
        "ports_in_use": [p for p in params["ports"] if p > 0 and p in listening],
        "commands_state": commands_state(params["state_dir"]),
        "files": {path: stat_path(path) for path in params["paths"]},
        "users": {name: user_info(name) for name in params["users"]},
        "host_key": " ".join(host_key.split()[:2]),
        "known_hosts": (known or "").splitlines(),
        "trees": {path: tree_hash(path) for path in params["trees"]},
        "contents": {path: read_small(path) for path in params["read"]},
        "reachable": {address: reachable(address) for address in params["connect"]},
    }


def main():
    module = AnsibleModule(
        argument_spec={
            "python": {"type": "path", "default": "/usr/bin/python3"},
            "venv": {"type": "path", "default": "/opt/ray/venv"},
            "requirements_file": {"type": "path"},
            "units": {"type": "list", "elements": "str", "default": []},
            "ports": {"type": "list", "elements": "int", "default": []},
            "state_dir": {"type": "path"},
            "paths": {"type": "list", "elements": "path", "default": []},
            "users": {"type": "list", "elements": "str", "default": []},
            "known_hosts": {"type": "path"},
            "trees": {"type": "list", "elements": "path", "default": []},
            "read": {"type": "list", "elements": "path", "default": []},
            "connect": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    module.exit_json(changed=False, **probe(module.params))


if __name__ == "__main__":
    main()
