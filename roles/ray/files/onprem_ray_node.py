"""Node-side helper of the onprem.ray roles: one JSON answer per call, clear errors.

Run by the roles with `python3 -c <this file> <command> <json arguments>`:

    probe   what the machine has (OS, systemd, Ray version in the venv, ports in use,
            files, users, units, the recorded command hashes); standard library only, run
            before Ray exists.
    apply   ensure a list of files and directories (content, owner, group, mode) in one
            round trip, each only when it differs, atomically; the list comes on stdin.
            Reloads systemd when a unit file changed, and starts the units it is asked to.
    wait    poll the head's GCS until this node is ALIVE in Ray (or a deadline passes).
    drain   ask the head's GCS to drain this node, then wait until Ray reports it gone
            (or a deadline passes). A refused drain is an error that says Ray's reason.

`wait` and `drain` run with the Ray venv's python and the token settings in the environment
(RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH). The answer is one JSON object on stdout; failures exit
non-zero with a JSON object whose "msg" says what happened.
"""

from __future__ import annotations

import glob
import grp
import hashlib
import json
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time


def fail(msg: str, **extra: object) -> None:
    print(json.dumps({"failed": True, "msg": msg, **extra}))
    sys.exit(1)


def _os_release() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open("/etc/os-release", encoding="utf-8") as f:
            for line in f:
                key, sep, value = line.strip().partition("=")
                if sep:
                    out[key.lower()] = value.strip('"')
    except OSError:
        pass
    return out


def _listening_ports() -> set[int]:
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A":  # TCP_LISTEN
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except (OSError, StopIteration):
            continue
    return ports


def _installed_version(venv: str, dist: str) -> str | None:
    pattern = os.path.join(venv, "lib", "python3*", "site-packages", f"{dist}-*.dist-info")
    for info in glob.glob(pattern):
        name = os.path.basename(info)[len(dist) + 1:-len(".dist-info")]
        if name and os.path.exists(os.path.join(info, "METADATA")):
            return name
    return None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def _stat(path: str) -> dict:
    """Existence, kind, mode, owner, group and (for a file) SHA-1 of `path` (`~user/` expanded)."""
    full = os.path.expanduser(path)
    try:
        st = os.stat(full)
    except OSError:
        return {"exists": False}
    out = {"exists": True, "isdir": stat.S_ISDIR(st.st_mode), "mode": f"{st.st_mode & 0o7777:04o}",
           "owner": _name(pwd.getpwuid, st.st_uid), "group": _name(grp.getgrgid, st.st_gid)}
    if stat.S_ISREG(st.st_mode):
        digest = hashlib.sha1()  # noqa: S324 - compared with Ansible's own checksums
        try:
            with open(full, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            out["sha1"] = digest.hexdigest()
        except OSError:
            out["sha1"] = None
    return out


def tree_hash(root: str) -> str | None:
    """SHA-256 over the relative paths and contents of the files under `root`, Python caches
    left out: the same on the controller and on the node when the trees are the same."""
    root = os.path.expanduser(root)
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


def collection_dir(name: str) -> str | None:
    """The directory of collection `name` (namespace.name) on the controller: in Ansible's
    collections path, else on Python's path (collections installed with pip's `ansible`)."""
    from ansible import constants  # the controller only

    namespace, _dot, collection = name.partition(".")
    for root in [*constants.COLLECTIONS_PATHS, *sys.path]:
        path = os.path.join(os.path.expanduser(root), "ansible_collections", namespace, collection)
        if os.path.isdir(path):
            return os.path.realpath(path)
    return None


def agent_sources(args: dict) -> dict:
    """The trees the head's agent runs from, on the controller: its package, the parts of this
    collection, the other collections; each with its source directory (None: not found) and
    tree hash, in the order of the head role's head__agent_tree_dests. Also a staging directory
    of symbolic links laid out as on the head (args["layout"]: each tree's path there), so
    that one rsync (following the links) copies them all."""
    sources = [args["agent"]]
    sources += [os.path.join(args["collection"], part) for part in args["parts"]]
    sources += [collection_dir(name) for name in args["collections"]]
    trees = [{"src": src and os.path.realpath(src), "hash": src and tree_hash(src)}
             for src in sources]
    key = hashlib.sha256(json.dumps([args, trees], sort_keys=True).encode()).hexdigest()[:16]
    stage = os.path.join(os.path.expanduser("~/.cache/onprem-ray/agent-stage"), key)
    if all(tree["src"] for tree in trees) and not os.path.isdir(stage):
        building = f"{stage}.{os.getpid()}"
        for tree, relative in zip(trees, args["layout"], strict=True):
            link = os.path.join(building, relative)
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(tree["src"], link)
        os.rename(building, stage)
        _prune_stages(os.path.dirname(stage), keep=stage)
    elif os.path.isdir(stage):
        os.utime(stage)  # in use: not pruned for another day
    return {"stage": stage, "trees": trees}


def _prune_stages(parent: str, keep: str, max_age_s: float = 86400) -> None:
    """Remove staging directories of other contents not used for a day (links only: cheap to
    make again); a run of another checkout may still be using a recent one."""
    now = time.time()
    for entry in os.scandir(parent):
        try:
            if entry.path != keep and now - entry.stat(follow_symlinks=False).st_mtime > max_age_s:
                shutil.rmtree(entry.path)
        except OSError:
            pass  # gone already, or in use: the next run tries again


def _name(lookup, ident: int) -> str:
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def _user(name: str) -> dict:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return {"exists": False}
    return {"exists": True, "home": entry.pw_dir, "shell": entry.pw_shell,
            "group": _name(grp.getgrgid, entry.pw_gid)}


def _unit(name: str) -> dict:
    def ask(verb: str) -> str:
        result = subprocess.run(["systemctl", verb, name], capture_output=True, text=True,
                                check=False)
        return result.stdout.strip()
    return {"active": ask("is-active") == "active", "enabled": ask("is-enabled") == "enabled"}


def probe(args: dict) -> dict:
    """Everything the roles need to know about the machine, in one round trip."""
    release = _os_release()
    systemd = os.path.isdir("/run/systemd/system")
    units = {u: _unit(u) if systemd else {"active": False, "enabled": False}
             for u in args.get("units", [])}
    wanted = [int(p) for p in args.get("ports", []) if int(p) > 0]
    listening = _listening_ports()
    state: dict[str, str] = {}
    for path in glob.glob(os.path.join(args.get("state_dir", "") or "/nonexistent", "*.sha256")):
        state[os.path.basename(path)[:-len(".sha256")]] = (_read(path) or "").strip()
    known = _read(os.path.expanduser(args["known_hosts"])) if args.get("known_hosts") else None
    host_key = _read("/etc/ssh/ssh_host_ed25519_key.pub") or ""
    return {
        "os_id": release.get("id", ""),
        "os_like": release.get("id_like", ""),
        "os_version": release.get("version_id", ""),
        "python": ".".join(map(str, sys.version_info[:3])),
        "systemd": systemd,
        "venv_python": os.access(os.path.join(args.get("venv", ""), "bin", "python"), os.X_OK),
        "ray_version": _installed_version(args.get("venv", ""), "ray"),
        "requirements": _read(args.get("requirements_file", "")),
        "units": units,
        "ports_in_use": [p for p in wanted if p in listening],
        "commands_state": state,
        "files": {path: _stat(path) for path in args.get("files", [])},
        "users": {name: _user(name) for name in args.get("users", [])},
        "host_key": " ".join(host_key.split()[:2]),
        "known_hosts": (known or "").splitlines(),
        "trees": {path: tree_hash(path) for path in args.get("trees", [])},
    }


def _ids(owner: str | None, group: str | None) -> tuple[int, int]:
    """uid and gid to set (-1: leave as is); no group means the owner's primary group."""
    entry = pwd.getpwnam(owner) if owner else None
    uid = entry.pw_uid if entry else -1
    if group:
        return uid, grp.getgrnam(group).gr_gid
    return uid, entry.pw_gid if entry else -1


def _meta_differs(path: str, uid: int, gid: int, mode: int | None) -> bool:
    st = os.lstat(path)
    return ((uid != -1 and st.st_uid != uid) or (gid != -1 and st.st_gid != gid)
            or (mode is not None and st.st_mode & 0o7777 != mode))


def _write_atomic(path: str, data: bytes, uid: int, gid: int, mode: int | None) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".onprem-ray.", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chown(tmp, uid, gid)
        os.chmod(tmp, 0o644 if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _ensure(entry: dict, check: bool) -> bool:
    """Bring one path to its entry; return whether it changed (or would, in check mode)."""
    path = os.path.expanduser(entry["path"])
    state = entry.get("state", "file")
    uid, gid = _ids(entry.get("owner"), entry.get("group"))
    mode = int(entry["mode"], 8) if entry.get("mode") else None
    if state == "absent":
        if not os.path.lexists(path):
            return False
        if not check:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        return True
    if state == "directory":
        if os.path.isdir(path) and not _meta_differs(path, uid, gid, mode):
            return False
        if not check:
            os.makedirs(path, exist_ok=True)
            os.chown(path, uid, gid)
            os.chmod(path, 0o755 if mode is None else mode)
        return True
    current = None
    if os.path.exists(path):
        with open(path, "rb") as f:
            current = f.read()
    if "copy_from" in entry:
        source = os.path.expanduser(entry["copy_from"])
        if not os.path.exists(source):
            if check:
                return True  # made earlier in this (checked) run
            raise FileNotFoundError(f"the source {entry['copy_from']} does not exist")
        with open(source, "rb") as f:
            data = f.read()
    elif entry.get("generate") == "token":
        # Ray's own token format (ray get-auth-token --generate): 256 random bits as hex.
        data = current if current else secrets.token_hex(32).encode()
    else:
        data = entry.get("content", "").encode()
    if current is not None and entry.get("force") is False:
        data = current
    if current == data and not _meta_differs(path, uid, gid, mode):
        return False
    if not check:
        if current != data:
            _write_atomic(path, data, uid, gid, mode)
        else:
            os.chown(path, uid, gid)
            if mode is not None:
                os.chmod(path, mode)
    return True


def _systemctl(*argv: str) -> None:
    result = subprocess.run(["systemctl", *argv], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        fail(f"systemctl {' '.join(argv)} failed ({result.returncode}): "
             f"{(result.stderr or result.stdout).strip()}")


def _await_port(spec: dict) -> None:
    """Wait until spec's host:port accepts connections from here (a worker's Ray needs the
    head's GCS: the head may still be starting, and a firewall shows up here)."""
    address = (spec["host"], int(spec["port"]))
    timeout = float(spec.get("timeout", 60))
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(address, timeout=2).close()
            return
        except OSError as err:
            if time.monotonic() >= deadline:
                fail(f"{spec.get('what', 'the address')} {address[0]}:{address[1]} did not answer "
                     f"from this machine within {timeout:.0f}s ({err}); Ray was not started here")
            time.sleep(0.25)


def apply(args: dict) -> dict:
    """Ensure the entries read from stdin ({"entries": [...], "start": [unit, ...]}).

    Systemd reloads its units when a changed entry is a unit file, and each unit of "start"
    is enabled and started unless it already runs enabled, once "await" ({"host", "port",
    "timeout", "what"}) accepts connections: a file change, a start and the reload cost one
    round trip. Restarts are not done here (the roles' handlers do them).
    Entries may hold secrets: nothing of an entry but its path is ever printed.
    args: {"check": bool}.
    """
    request = json.load(sys.stdin)
    check = bool(args.get("check"))
    changed = []
    for entry in request["entries"]:
        try:
            if _ensure(entry, check):
                changed.append(entry["path"])
        except (OSError, KeyError) as err:
            fail(f"{entry.get('path')}: {type(err).__name__}: {err}", changed_paths=changed)
    reloaded = any(path.endswith(".service") for path in changed)
    if reloaded and not check:
        _systemctl("daemon-reload")
    started = [unit for unit in request.get("start", [])
               if _unit(unit) != {"active": True, "enabled": True}]
    if started and not check and request.get("await"):
        _await_port(request["await"])
    for unit in started:
        if not check:
            _systemctl("enable", "--now", unit)
    return {"changed": bool(changed or started), "changed_paths": changed, "reloaded": reloaded,
            "started": started}


def _gcs(address: str, timeout: float):
    host, _colon, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            break
        except OSError as err:
            if time.monotonic() > deadline:
                fail(f"the head's GCS at {address} does not answer: {err}")
            time.sleep(0.5)
    from ray._raylet import GcsClient

    return GcsClient(address=address)


def _nodes(client, ip: str) -> list:
    from ray.core.generated import gcs_pb2

    alive = gcs_pb2.GcsNodeInfo.ALIVE
    return [info for info in client.get_all_node_info(timeout=10).values()
            if info.node_manager_address == ip and info.state == alive]


def _describe(info) -> dict:
    return {
        "node_id": info.node_id.hex(),
        "ip": info.node_manager_address,
        "is_head": info.is_head_node,
        "resources": {k: v for k, v in info.resources_total.items()
                      if not k.startswith("node:")},
        "labels": dict(info.labels),
    }


def wait(args: dict) -> dict:
    timeout = float(args.get("timeout", 120))
    deadline = time.monotonic() + timeout
    client = _gcs(args["address"], timeout)
    last = ""
    while time.monotonic() < deadline:
        try:
            nodes = _nodes(client, args["ip"])
        except Exception as err:  # Ray raises several types while the GCS starts
            nodes, last = [], f"{type(err).__name__}: {err}"
        if nodes:
            return {"changed": False, "node": _describe(nodes[0])}
        time.sleep(0.5)
    fail(f"{args['ip']} is not ALIVE in Ray at {args['address']} after {timeout:.0f}s"
         + (f" (last error: {last})" if last else "")
         + "; see `journalctl -u <unit>` and /tmp/ray/session_latest/logs on the node")
    return {}


def _stop(args: dict) -> None:
    """Stop the unit at once: a drained raylet exits, and systemd would restart it."""
    unit = args.get("unit", "")
    if unit:
        subprocess.run(["systemctl", "stop", unit], check=False, capture_output=True)


def drain(args: dict) -> dict:
    from ray.core.generated import autoscaler_pb2

    timeout = float(args.get("timeout", 300))
    client = _gcs(args["address"], 10)
    nodes = _nodes(client, args["ip"])
    if not nodes:
        return {"changed": False, "drained": False, "msg": f"{args['ip']} is not in Ray"}
    info = nodes[0]
    if info.is_head_node:
        fail(f"{args['ip']} is the head: the head is never drained")
    reason = {
        "idle": autoscaler_pb2.DRAIN_NODE_REASON_IDLE_TERMINATION,
        "preemption": autoscaler_pb2.DRAIN_NODE_REASON_PREEMPTION,
    }[args.get("reason", "idle")]
    deadline_ms = int((time.time() + timeout) * 1000)
    # The node id goes as hex: GCS decodes it with FromHex (a binary id is silently ignored).
    accepted, why = client.drain_node(info.node_id.hex(), reason,
                                      args.get("message", "onprem.ray"), deadline_ms)
    if isinstance(why, bytes):
        why = why.decode("utf-8", "replace")
    why = str(why).encode("utf-8", "replace").decode("utf-8")
    if not accepted:
        fail(f"Ray refused to drain {args['ip']} (node {info.node_id.hex()}): {why}; "
             "the node keeps running", node=_describe(info))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _nodes(client, args["ip"]):
            _stop(args)
            return {"changed": True, "drained": True, "node": _describe(info)}
        time.sleep(0.5)
    if args.get("stop_at_deadline", True):
        _stop(args)
        return {"changed": True, "drained": False, "node": _describe(info),
                "msg": f"{args['ip']} still had work after {timeout:.0f}s; stopped it"}
    fail(f"{args['ip']} did not finish draining within {timeout:.0f}s; it keeps running",
         node=_describe(info))
    return {}


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "agent-sources":  # on the controller, for comparison with the probe's trees
        print(json.dumps(agent_sources(json.loads(sys.argv[2]))))
        return
    args = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    handlers = {"probe": probe, "apply": apply, "wait": wait, "drain": drain}
    if command not in handlers:
        fail(f"unknown command {command!r}; one of {sorted(handlers)}")
    print(json.dumps(handlers[command](args)))


if __name__ == "__main__":
    main()
