"""Running the collection's playbooks through ansible-runner, and reading back how they ended.

Each run is `ansible-playbook -i <cluster file> <playbook> --limit <ips>` in a background
thread, with ident = the action's request id, so its artifacts (status, rc, events, stdout)
land in `<private_data_dir>/artifacts/<request id>/` and can be read back after a crash. The
outcome of each host comes from the runner's stats: unreachable (Ansible's "dark") is told
apart from failed, and the failing task's output is kept for `status`.

A canceled or timed-out run is ended whole: ansible-runner kills the playbook's process group,
but ansible-core forks its workers each into a session of its own, where they would finish
their task (and keep its SSH session) after the run is recorded as ended. Every process of a
run carries RUN_MARKER=<request id> in its environment; those and their children are killed.

Only IPs of the pool given to the adapter ever reach --limit, and for retire_workers the
machines that left the inventory but still run Ray (`reach`): they get a one-run inventory of
their own beside the cluster file, never the add playbook.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

ADD_WORKERS = "onprem.ray.add_workers"
RETIRE_WORKERS = "onprem.ray.retire_workers"

OK, FAILED, UNREACHABLE = "ok", "failed", "unreachable"
FINAL_STATUSES = frozenset({"successful", "failed", "canceled", "timeout"})
# Statuses after which every host of the run has an outcome (missing ones count as failed);
# after a cancel or a timeout, a host without a result has none.
COMPLETE_STATUSES = frozenset({"successful", "failed"})
ERROR_TAIL_CHARS = 2000
OUTPUT_TAIL_CHARS = 4000
# Names of hosts that may reach --limit: addresses and DNS names, nothing Ansible reads as a
# pattern (`!`, `&`, `*`, `~`, `,`).
_SAFE_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:-]*")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # Ansible's colours, in the saved stdout
# In the environment of every process of a run (inherited), so that a cancel ends them all.
RUN_MARKER = "ONPREM_RAY_RUN"
PROC = Path("/proc")


def _departed_host(name: str) -> bool:
    """A name from the state store that may reach --limit of a one-run inventory: an address
    or a dotted DNS name, never a word Ansible reads as a group (`all`, `ray_workers` ...)."""
    return bool(_SAFE_HOST.fullmatch(name)) and ("." in name or ":" in name)


class PoolViolation(ValueError):
    """A run was asked for a host the adapter must not act on."""


class RunConflict(RuntimeError):
    """A run was asked for a request id or a host that a running run already has."""


@dataclass(frozen=True)
class RunResult:
    """How one playbook run ended, host by host."""

    request_id: str
    playbook: str
    ips: tuple[str, ...]
    status: str  # successful, failed, canceled, timeout
    rc: int | None
    hosts: Mapping[str, str] = field(default_factory=dict)  # ip -> ok|failed|unreachable
    errors: Mapping[str, str] = field(default_factory=dict)  # ip -> failing task and output
    failed_tasks: Mapping[str, str] = field(default_factory=dict)  # ip -> failing task name
    output_tail: str = ""  # the end of the run's output
    duration_s: float | None = None


class PlaybookRunner(Protocol):
    """What the loop and the service need of a playbook runner (the tests give it a fake)."""

    def start(self, request_id: str, playbook: str, ips: Iterable[str],
              extravars: Mapping[str, Any] | None = None,
              timeout_s: float | None = None) -> None: ...

    def poll(self) -> list[RunResult]: ...

    def running(self) -> list[str]: ...

    def cancel(self, request_id: str) -> None: ...

    def cancel_all(self) -> None: ...

    def recorded(self, request_id: str) -> RunResult | None: ...

    def wait(self, timeout_s: float) -> bool: ...

    def reach(self, ip: str, node_type: str) -> bool: ...

    def set_pool(self, pool: Iterable[str], inventory: str | os.PathLike[str] | None = None,
                 leaving_hostvars: Callable[[str, str], Mapping[str, Any]] | None = None,
                 ) -> None: ...


def ansible_environment(collection_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """What ansible-playbook needs to find the collection and itself, unless already set:
    the collection's ansible.cfg (a checkout), or the collections path it is installed in,
    and this Python's bin directory on PATH (ansible-runner spawns `ansible-playbook`)."""
    env: dict[str, str] = {}
    if "ANSIBLE_CONFIG" not in environ and (collection_dir / "ansible.cfg").is_file():
        env["ANSIBLE_CONFIG"] = str(collection_dir / "ansible.cfg")
    parts = collection_dir.parts
    # An ansible.cfg given (the head's) says where the collections are: it is not overridden.
    if (len(parts) > 3 and parts[-3] == "ansible_collections"
            and not {"ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_CONFIG"} & set(environ)):
        env["ANSIBLE_COLLECTIONS_PATH"] = str(collection_dir.parents[2])
    bin_dir = str(Path(sys.executable).parent)
    path = environ.get("PATH", os.defpath)
    if bin_dir not in path.split(os.pathsep):
        env["PATH"] = os.pathsep.join([bin_dir, path])
    return env


@dataclass
class _Active:
    request_id: str
    playbook: str
    ips: tuple[str, ...]
    thread: threading.Thread
    runner: Any
    started: float
    ended: list[float]  # filled by ansible-runner's finished callback


class AnsibleRunner:
    """Runs playbooks on IPs of `pool`, `inventory` being the cluster file."""

    def __init__(self, private_data_dir: str | os.PathLike[str], inventory: str | os.PathLike[str],
                 pool: Iterable[str], *, envvars: Mapping[str, str] | None = None,
                 leaving_hostvars: Callable[[str, str], Mapping[str, Any]] | None = None,
                 retire_playbook: str = RETIRE_WORKERS,
                 keep_artifacts: int = 200, cancel_check_s: float = 1.0) -> None:
        self.private_data_dir = Path(private_data_dir).resolve()
        self.private_data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # ansible-runner sets ANSIBLE_HOST_KEY_CHECKING=False when it is not set, and Ansible
        # puts the StrictHostKeyChecking=no that follows before the inventory's own ssh options
        # (ssh takes the first): host keys are checked as the inventory says.
        self.envvars = {"ANSIBLE_HOST_KEY_CHECKING": "True", **dict(envvars or {})}
        self.keep_artifacts = keep_artifacts
        self.cancel_check_s = cancel_check_s
        self._lock = threading.Lock()
        self._active: dict[str, _Active] = {}
        self._canceled: set[str] = set()
        self.retire_playbook = retire_playbook
        self._leaving: dict[str, dict[str, Any]] = {}
        self.set_pool(pool, inventory, leaving_hostvars)

    def set_pool(self, pool: Iterable[str], inventory: str | os.PathLike[str] | None = None,
                 leaving_hostvars: Callable[[str, str], Mapping[str, Any]] | None = None,
                 ) -> None:
        """The hosts runs may name from now on (after a new cluster file is read), and how to
        reach a machine that left it (the new file's variables for its node type)."""
        self.pool = frozenset(pool)
        if inventory is not None:
            self.inventory = Path(inventory).resolve()
        if leaving_hostvars is not None or inventory is not None:
            self.leaving_hostvars = leaving_hostvars
        self._leaving = {}

    def reach(self, ip: str, node_type: str) -> bool:
        """Let the next retire_workers run reach `ip`, gone from the inventory but still
        running Ray. False when there is no way to (then it is never named in a run)."""
        if ip in self.pool:
            return True
        if self.leaving_hostvars is None or not _departed_host(ip):
            return False
        try:
            hostvars = dict(self.leaving_hostvars(ip, node_type))
        except (KeyError, ValueError) as err:
            raise PoolViolation(f"{ip}: cannot be reached to retire it: {err}") from err
        self._leaving[ip] = hostvars
        return True

    # ------------------------------------------------------------ starting

    def _check(self, request_id: str, playbook: str, ips: tuple[str, ...]) -> None:
        if not _SAFE_HOST.fullmatch(request_id):
            raise ValueError(f"request id {request_id!r} is not a safe ident")
        if not ips:
            raise PoolViolation(f"run {request_id}: no hosts to act on")
        if len(set(ips)) != len(ips):
            raise PoolViolation(f"run {request_id}: a host is named twice in {', '.join(ips)}")
        allowed = self.pool | (set(self._leaving) if playbook == self.retire_playbook else set())
        outside = [ip for ip in ips if ip not in allowed or not _SAFE_HOST.fullmatch(ip)]
        if outside:
            raise PoolViolation(f"run {request_id}: refusing to act on {', '.join(outside)}: "
                                "not a worker of the pool")
        if not self.inventory.is_file():
            raise FileNotFoundError(f"run {request_id}: the inventory {self.inventory} is gone")
        with self._lock:
            if request_id in self._active:
                raise RunConflict(f"run {request_id} is already running")
            busy = {ip: run.request_id for run in self._active.values() for ip in run.ips}
        taken = [f"{ip} (run {busy[ip]})" for ip in ips if ip in busy]
        if taken:
            raise RunConflict(f"run {request_id}: hosts already in a running run: "
                              f"{', '.join(taken)}")

    def start(self, request_id: str, playbook: str, ips: Iterable[str],
              extravars: Mapping[str, Any] | None = None,
              timeout_s: float | None = None) -> None:
        """Start `playbook` on `ips` in the background; poll() tells when it ended."""
        import ansible_runner

        ips = tuple(ips)
        self._check(request_id, playbook, ips)
        inventory: str | list[str] = str(self.inventory)
        leaving = {ip: self._leaving[ip] for ip in ips if ip not in self.pool}
        if leaving:
            inventory = [inventory, str(self._leaving_inventory(request_id, leaving))]
        started = time.monotonic()
        ended: list[float] = []
        thread, runner = ansible_runner.run_async(
            private_data_dir=str(self.private_data_dir),
            playbook=playbook,
            inventory=inventory,
            limit=",".join(ips),
            ident=request_id,
            extravars=dict(extravars or {}),
            envvars={**self.envvars, RUN_MARKER: request_id},
            timeout=None if timeout_s is None else max(1, int(timeout_s)),
            cancel_callback=lambda: self._cancel_now(request_id),
            finished_callback=lambda _runner: ended.append(time.monotonic()),
            settings={"pexpect_timeout": self.cancel_check_s},
            rotate_artifacts=self.keep_artifacts,
            suppress_env_files=True,  # else the first run's variables are reused by every run
            quiet=True,
        )
        with self._lock:
            self._active[request_id] = _Active(request_id, playbook, ips, thread, runner,
                                               started, ended)

    def _leaving_inventory(self, request_id: str, hosts: Mapping[str, Mapping]) -> Path:
        """An inventory of the machines that left the cluster file, for one run (JSON is
        YAML): in ray_workers, as retire_workers requires."""
        directory = self.private_data_dir / "leaving"
        directory.mkdir(mode=0o700, exist_ok=True)
        path = directory / f"{request_id}.yml"
        data = {"all": {"children": {"ray_workers": {"hosts": {
            ip: dict(hostvars) for ip, hostvars in hosts.items()}}}}}
        path.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
        return path

    # ------------------------------------------------------------ watching

    def running(self) -> list[str]:
        """The runs still running (an ended one is reported by the next poll())."""
        with self._lock:
            return sorted(rid for rid, run in self._active.items() if run.thread.is_alive())

    def cancel(self, request_id: str) -> None:
        """Ask a run to stop; it ends as canceled and is reported by poll()."""
        with self._lock:
            if request_id in self._active:
                self._canceled.add(request_id)

    def _cancel_now(self, request_id: str) -> bool:
        """ansible-runner's question, between two reads of the run's output: stop it now?
        Then the run's processes are killed here, its workers included."""
        if request_id not in self._canceled:
            return False
        end_run_processes(request_id)
        return True

    def cancel_all(self) -> None:
        for request_id in self.running():
            self.cancel(request_id)

    def poll(self) -> list[RunResult]:
        """The runs that ended since the last poll."""
        with self._lock:
            done = [run for run in self._active.values() if not run.thread.is_alive()]
            for run in done:
                del self._active[run.request_id]
                self._canceled.discard(run.request_id)
        results = []
        for run in done:
            status = getattr(run.runner, "status", "")
            if status not in COMPLETE_STATUSES:  # killed (timeout): its workers may be left
                end_run_processes(run.request_id)
            rc = getattr(run.runner, "rc", None)
            ended = run.ended[0] if run.ended else time.monotonic()
            results.append(read_result(
                self._artifact_dir(run.request_id), run.request_id, run.playbook, run.ips,
                status=status if status in FINAL_STATUSES else None, rc=rc,
                duration_s=ended - run.started))
        return results

    def wait(self, timeout_s: float) -> bool:
        """Wait until no run is running; False if some still are after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            threads = [run.thread for run in self._active.values()]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in threads)

    def recorded(self, request_id: str) -> RunResult | None:
        """A run that ended, read back from its artifacts (after the agent was restarted);
        None when it is running here, or it left no final status (it was killed with us)."""
        with self._lock:
            if request_id in self._active:
                return None
        directory = self._artifact_dir(request_id)
        status = _read_text(directory / "status")
        if status not in FINAL_STATUSES:
            return None
        playbook, ips = _command_of(directory)
        return read_result(directory, request_id, playbook, ips)

    def _artifact_dir(self, request_id: str) -> Path:
        if not _SAFE_HOST.fullmatch(request_id):
            raise ValueError(f"request id {request_id!r} is not a safe ident")
        return self.private_data_dir / "artifacts" / request_id


# ---------------------------------------------------------------- a run's processes


def _process_table(proc: Path) -> dict[int, tuple[int, bytes | None]]:
    """pid -> (parent pid, environment or None when unreadable) of every live process."""
    table: dict[int, tuple[int, bytes | None]] = {}
    try:
        entries = [entry.name for entry in os.scandir(proc) if entry.name.isdigit()]
    except OSError:
        return table
    for name in entries:
        try:
            stat = (proc / name / "stat").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (command) "
        if len(fields) < 2 or fields[0] in ("Z", "X"):  # ended, not reaped yet
            continue
        try:
            environ: bytes | None = (proc / name / "environ").read_bytes()
        except OSError:
            environ = None  # e.g. ssh, which forbids reading it
        table[int(name)] = (int(fields[1]), environ)
    return table


def run_processes(request_id: str, proc: Path = PROC) -> set[int]:
    """The live processes of run `request_id`: those with its marker in their environment,
    and their descendants (ssh hides its environment, not its parent)."""
    marker = f"{RUN_MARKER}={request_id}".encode()
    table = _process_table(proc)
    found = {pid for pid, (_, environ) in table.items()
             if environ is not None and marker in environ.split(b"\0")}
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    stack = list(found)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    found.discard(os.getpid())
    return found


def end_run_processes(request_id: str, proc: Path = PROC, passes: int = 10) -> int:
    """SIGKILL every process of run `request_id`, again until none is left (one forked
    meanwhile included); how many were killed."""
    killed: set[int] = set()
    for _ in range(passes):
        pids = run_processes(request_id, proc) - killed
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        time.sleep(0.05)  # let the kernel end them before the next look
    return len(killed)


# ---------------------------------------------------------------- reading artifacts


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def _command_of(directory: Path) -> tuple[str, tuple[str, ...]]:
    """The playbook and the --limit hosts of a run, from the command ansible-runner saved."""
    try:
        command = json.loads((directory / "command").read_text(encoding="utf-8"))["command"]
    except (OSError, ValueError, KeyError, TypeError):
        return "", ()
    limit = ""
    if "--limit" in command:
        index = command.index("--limit")
        limit = command[index + 1] if index + 1 < len(command) else ""
    return (str(command[-1]) if command else ""), tuple(h for h in limit.split(",") if h)


def _events(directory: Path) -> list[dict]:
    events = []
    events_dir = directory / "job_events"
    with contextlib.suppress(OSError):
        for path in events_dir.glob("*.json"):
            if path.name.endswith("-partial.json"):
                continue
            try:
                events.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
    events.sort(key=lambda event: event.get("counter", 0))
    return events


def _tail(text: str, limit: int) -> str:
    text = _ANSI.sub("", text).strip()
    return text if len(text) <= limit else "..." + text[-(limit - 3):]


def _res_text(res: Mapping[str, Any]) -> list[str]:
    parts = []
    for key in ("msg", "stdout", "stderr", "module_stdout", "module_stderr"):
        value = res.get(key)
        if isinstance(value, str) and value.strip() and value.strip() not in parts:
            parts.append(value.strip())
    for item in res.get("results") or ():  # a loop: the items that failed
        if isinstance(item, Mapping) and (item.get("failed") or item.get("unreachable")):
            parts += _res_text(item)
    return parts


def _host_error(event_data: Mapping[str, Any]) -> tuple[str, str]:
    task = str(event_data.get("task") or "")
    res = event_data.get("res")
    parts = _res_text(res) if isinstance(res, Mapping) else []
    return task, _tail(f"{task}: " + "\n".join(parts or ["failed"]), ERROR_TAIL_CHARS)


def _stats(events: list[dict]) -> Mapping[str, Any] | None:
    for event in reversed(events):
        if event.get("event") == "playbook_on_stats":
            return event.get("event_data") or {}
    return None


def read_result(directory: Path, request_id: str, playbook: str, ips: Iterable[str], *,
                status: str | None = None, rc: int | None = None,
                duration_s: float | None = None) -> RunResult:
    """How a run ended, from its artifacts directory (`status` and `rc` when known better)."""
    ips = tuple(ips)
    status = status or _read_text(directory / "status") or "failed"
    if rc is None:
        text = _read_text(directory / "rc")
        rc = int(text) if text.lstrip("-").isdigit() else None
    events = _events(directory)
    errors: dict[str, str] = {}
    failed_tasks: dict[str, str] = {}
    seen_unreachable: set[str] = set()
    seen_failed: set[str] = set()
    for event in events:
        kind = event.get("event")
        data = event.get("event_data") or {}
        host = str(data.get("host") or "")
        if kind == "runner_on_unreachable":
            seen_unreachable.add(host)
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            seen_failed.add(host)
        else:
            continue
        failed_tasks[host], errors[host] = _host_error(data)

    stats = _stats(events)
    output_tail = _tail(_read_text(directory / "stdout"), OUTPUT_TAIL_CHARS)
    hosts: dict[str, str] = {}
    for ip in ips:
        if stats is not None:
            if ip in (stats.get("dark") or {}):
                hosts[ip] = UNREACHABLE
            elif ip in (stats.get("failures") or {}):
                hosts[ip] = FAILED
            elif ip in (stats.get("processed") or {}):
                hosts[ip] = OK
        elif ip in seen_unreachable:
            hosts[ip] = UNREACHABLE
        elif ip in seen_failed:
            hosts[ip] = FAILED
        if ip not in hosts and status in COMPLETE_STATUSES:
            # e.g. the inventory did not parse, or the host was not in it: the run's output
            # is the only explanation there is
            hosts[ip] = FAILED
            errors[ip] = _tail(f"no result for {ip} in this run ({status}, rc {rc}):\n"
                               f"{output_tail or _read_text(directory / 'stderr')}",
                               ERROR_TAIL_CHARS)
        if hosts.get(ip) == OK:
            errors.pop(ip, None)  # a failure that a rescue or a retry recovered from
            failed_tasks.pop(ip, None)
    return RunResult(
        request_id=request_id, playbook=playbook, ips=ips, status=status, rc=rc,
        hosts=hosts,
        errors={ip: text for ip, text in errors.items() if ip in hosts},
        failed_tasks={ip: task for ip, task in failed_tasks.items() if ip in hosts},
        output_tail=output_tail, duration_s=duration_s,
    )
