# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The files through which `up` tells the agent which workers it starts (its claim), in the
agent's state directory. Shared by the module up_claim and the agent (standard library only).

- up-claim.lock: held (flock) by the agent for each iteration, and by up_claim while it reads
  runs-under-way.json and writes up-claim.json: a claim is never written between the agent's
  reading of it and its starting a run.
- runs-under-way.json: written by the agent under the lock: its pid and, for every machine in
  one of its add or retire runs, the run's id.
- up-claim.json: written by up_claim under the lock: the claim's id ("up-..."), when it was
  written (the head's clock), the addresses `up` starts Ray on; rewritten by `up`'s last task
  with "ended": true and "released": those it ended without bringing ALIVE (taken out of the
  addresses). The agent removes it once it is ended and applied, or expired.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time

CLAIM_FILE = "up-claim.json"
LOCK_FILE = "up-claim.lock"
RUNS_FILE = "runs-under-way.json"


class LockTimeout(Exception):
    """The lock was not free within the time given."""


@contextlib.contextmanager
def locked(state_dir, timeout_s=None, uid=-1, gid=-1):
    """Hold up-claim.lock (exclusive); wait for it at most `timeout_s` (None: as long as it
    takes). The file is made (0600) owned by uid/gid (-1: the caller's), so that up_claim,
    as root, leaves one the agent's user can open."""
    fd = os.open(os.path.join(state_dir, LOCK_FILE), os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        if (uid, gid) != (-1, -1):
            stat = os.fstat(fd)
            if (stat.st_uid, stat.st_gid) != (uid, gid):
                os.fchown(fd, uid, gid)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(f"{LOCK_FILE} in {state_dir} was held for more than "
                                      f"{timeout_s:g} s") from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # releases the lock


def read_json(path):
    """The JSON object in `path`; None when there is none. ValueError when it is not JSON."""
    try:
        with open(path, encoding="utf-8") as stream:
            data = json.load(stream)
    except FileNotFoundError:
        return None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def write_json(path, data, uid=-1, gid=-1):
    """Replace `path` atomically (temp file, fsync, rename), mode 0600, owned by uid/gid
    (-1: the writer's)."""
    directory = os.path.dirname(path)
    fd, temp = tempfile.mkstemp(prefix=".claim-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(data, stream, sort_keys=True)
            stream.flush()
            os.fsync(stream.fileno())
        if uid != -1 or gid != -1:
            os.chown(temp, uid, gid)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def agent_runs(state_dir):
    """Address -> id of the agent's run that has it, when the agent that wrote
    runs-under-way.json still runs (else its runs ended with it: {})."""
    data = read_json(os.path.join(state_dir, RUNS_FILE)) or {}
    pid = data.get("agent_pid")
    if not isinstance(pid, int) or pid <= 0 or not _running(pid):
        return {}
    runs = data.get("runs") or {}
    return {str(ip): str(run) for ip, run in runs.items()} if isinstance(runs, dict) else {}


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
