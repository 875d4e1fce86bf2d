"""Benchmark of the agent on the local test pool: prints tables, asserts nothing.

    python bench/agent.py [--cycles 20] [--pool benchagent] [--no-peer] [--keep]
    python bench/agent.py --baseline CHECKOUT [--cycles 20] [--block 5]   before and after

With --baseline, the same cycles for an earlier checkout of this project (its playbooks and its
agent, each side on a pool of its own), in blocks of --block cycles taken in turn, so that both
sides meet the same load; each side's table, then the medians side by side.

A fresh pool (head + 3 workers), `up` with every worker prepared and none started
(min_workers 0), the agent enabled (one iteration a second, idle timeout --idle-s). A detached
actor holds the head's 2 CPUs; then each cycle creates a 1-CPU detached actor (demand no node
has room for), waits until it runs on a worker the agent added, kills it, and waits until the
agent has retired the idle worker. Every cycle must succeed.

Scale-up, from the demand to the worker ALIVE, broken down from the agent's log and the
ansible-runner events of its add run (same clock: the pool's machines share the host's):
  detection + decision   actor created -> the agent logs the add
  playbook start         the add logged -> ansible-playbook's first event
  playbook until ray     -> the task that starts Ray's unit begins
  ray start + register   -> the task waiting for the node ALIVE in Ray ends
Scale-down: idle timeout expiry (actor killed + idle timeout) -> the drain task of the retire
run ends (the node has left Ray). Memory: the agent's resident set size, idle, at the end.

Peer, measured in the same run on the same machines: Ray 2.60's own launcher (`ray up`, local
provider, min_workers 0) with the same demand; the time until a worker is ALIVE, or `never`
within --peer-wait seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

from up import flat_wheels, link_collection, peer_yaml, playbook, ray_cli, stop_peer  # noqa: E402

from tests.pool import pool as pools  # noqa: E402
from tests.pool.wheelhouse import ensure_wheelhouse  # noqa: E402

STATE_DIR = "/var/lib/onprem-ray/agent"
ARTIFACTS = f"{STATE_DIR}/runner/artifacts"
TOKEN_ENV = ["RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN_PATH=/etc/ray/auth_token"]
NO_TOKEN_ENV = ["RAY_AUTH_MODE=disabled"]
ACTOR = """
import sys, time, ray
ray.init(address=sys.argv[1], namespace="bench", logging_level="ERROR")
@ray.remote
class Holder:
    def where(self):
        return ray.util.get_node_ip_address()
name, cpus, wait = sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
actor = Holder.options(name=name, lifetime="detached", num_cpus=cpus).remote()
print(time.time(), flush=True)
if wait:
    print(ray.get(actor.where.remote(), timeout=wait))
"""
KILL = """
import sys, time, ray
ray.init(address=sys.argv[1], namespace="bench", logging_level="ERROR")
ray.kill(ray.get_actor(sys.argv[2]))
print(time.time())
"""
ALIVE_WORKERS = """
import json, sys
from ray._raylet import GcsClient
from ray.core.generated import gcs_pb2
nodes = GcsClient(address=sys.argv[1]).get_all_node_info(timeout=10).values()
print(json.dumps(sorted(n.node_manager_address for n in nodes
                        if n.state == gcs_pb2.GcsNodeInfo.ALIVE and not n.is_head_node)))
"""
# The ansible-runner events of one run: (event, task, created) in order.
EVENTS = """
import glob, json, os, sys
rows = []
for path in glob.glob(os.path.join(sys.argv[1], "job_events", "*.json")):
    try:
        event = json.load(open(path))
    except (FileNotFoundError, ValueError):  # a partial event renamed or still being written
        continue
    if "counter" not in event:  # a partial event the callback has not finished writing
        continue
    rows.append((event["counter"], event["event"], (event.get("event_data") or {}).get("task", ""),
                 event.get("created", "")))
print(json.dumps([row[1:] for row in sorted(rows)]))
"""
ALIVE_TASK = "Ray | wait until this node is ALIVE in Ray"
# The step that writes Ray's files and starts its unit (an include since it runs only where
# something is to do; one task, named as the second, in earlier versions), or where it has
# nothing to do, the wait, which then starts Ray's unit itself: the first of these to start.
START_TASK = ("Ray | files, token and start",
              "Ray | start script, systemd unit and token; started and enabled", ALIVE_TASK)
DRAIN_TASK = "Retire | drain the node"


class Head:
    def __init__(self, pool: pools.Pool, token: bool = True) -> None:
        self.pool, self.env = pool, TOKEN_ENV if token else NO_TOKEN_ENV

    @property
    def gcs(self) -> str:
        return f"{self.pool.head.ip}:6379"

    def ssh(self, *remote: str, timeout: float = 300) -> str:
        result = self.pool.ssh(self.pool.head, *remote, check=False, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(remote[:4])}: {result.stdout}{result.stderr}")
        return result.stdout

    def python(self, script: str, *args: str, timeout: float = 300) -> str:
        return self.ssh("sudo", "-u", "ray", "env", *self.env, "/opt/ray/venv/bin/python", "-c",
                        script, self.gcs, *args, timeout=timeout)

    def workers(self) -> list[str]:
        return json.loads(self.python(ALIVE_WORKERS))

    def journal_since(self, since: float) -> list[tuple[float, str]]:
        out = self.ssh("sudo", "journalctl", "-u", "onprem-ray-agent", "-o", "json",
                       "--since", f"@{since - 1:.0f}", "--no-pager")
        lines = []
        for line in out.splitlines():
            entry = json.loads(line)
            lines.append((int(entry["__REALTIME_TIMESTAMP"]) / 1e6, str(entry.get("MESSAGE", ""))))
        return lines

    def events(self, request_id: str) -> list[tuple[str, str, float]]:
        rows = json.loads(self.ssh("sudo", "python3", "-c", EVENTS, f"{ARTIFACTS}/{request_id}"))
        return [(event, task, datetime.fromisoformat(created).timestamp())
                for event, task, created in rows]


def wait_for(what: str, check, timeout: float, step: float = 0.5):
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        value = check()
        if value:
            return value
        time.sleep(step)
    raise RuntimeError(f"not within {timeout:.0f} s: {what}")


def logged(head: Head, since: float, needle: str, timeout: float = 120) -> tuple[float, str]:
    def find():
        return next(((t, m) for t, m in head.journal_since(since) if needle in m and t >= since
                     - 1), None)
    return wait_for(f"agent log line {needle!r}", find, timeout, step=1)


def first(events, event: str, task: str | tuple[str, ...] = "") -> float:
    return next(t for e, name, t in events if e == event and name.startswith(task))


def cycle(head: Head, n: int, idle_s: float) -> dict[str, float]:
    demand = float(head.python(ACTOR, f"cycle-{n}", "1", "0").split()[0])
    decided, line = logged(head, demand, "add_requested")
    request_id = line.split("[run ")[1].rstrip("]")
    ip = re.search(r"\badd (\S+) \(add_requested\)", line).group(1)
    wait_for(f"{ip} ALIVE", lambda: ip in head.workers(), 180)
    events = wait_for("the add run's events",
                      lambda: (lambda ev: ev if any(e == "playbook_on_stats" for e, _, _ in ev)
                               else None)(head.events(request_id)), 120, step=1)
    started = first(events, "playbook_on_start")
    ray_start = first(events, "playbook_on_task_start", START_TASK)
    alive = first(events, "runner_on_ok", ALIVE_TASK)
    killed = float(head.python(KILL, f"cycle-{n}").split()[0])
    _, retire_line = logged(head, killed, f"retire {ip}", timeout=idle_s + 120)
    retire_id = retire_line.split("[run ")[1].rstrip("]")
    wait_for(f"{ip} gone from Ray", lambda: ip not in head.workers(), 180)
    retire_events = wait_for("the retire run's end",
                             lambda: (lambda ev: ev if any(e == "playbook_on_stats"
                                                           for e, _, _ in ev) else None)(
                                 head.events(retire_id)), 120, step=1)
    drained = first(retire_events, "runner_on_ok", DRAIN_TASK)
    row = {"detection + decision": decided - demand, "playbook start": started - decided,
           "playbook until ray": ray_start - started, "ray start + register": alive - ray_start,
           "demand -> ALIVE": alive - demand, "idle expiry -> gone": drained - killed - idle_s}
    print(f"  cycle {n}: " + ", ".join(f"{k} {v:.1f} s" for k, v in row.items()), flush=True)
    return row


def peer(pool: pools.Pool, wait_s: float) -> float:
    """Ray's own launcher: seconds from demand to a worker ALIVE, inf when it never came."""
    config = pool.state_dir / "ray-up-peer.yaml"
    peer_yaml(pool, config)
    data = yaml.safe_load(config.read_text())
    data.update(min_workers=0, max_workers=len(pool.workers), idle_timeout_minutes=1)
    config.write_text(json.dumps(data, indent=2))
    _, rc, output = ray_cli("up", "-y", "--no-config-cache", str(config))
    if rc != 0:
        print(f"  ray up failed:\n{output[-2000:]}")
        return float("inf")
    gcs = f"{pool.head.ip}:6379"
    try:
        # Ray runs as the login user there, without a token.
        run = pool.ssh(pool.head, "env", *NO_TOKEN_ENV, "/opt/ray/venv/bin/python", "-c", ACTOR,
                       gcs, "peer-blocker", "2", "60", check=False, timeout=120)
        if run.returncode != 0:
            print(f"  peer: the blocker actor failed: {run.stderr[-1500:]}")
            return float("inf")
        demand = time.time()
        pool.ssh(pool.head, "env", *NO_TOKEN_ENV, "/opt/ray/venv/bin/python", "-c", ACTOR,
                 gcs, "peer-demand", "1", "0", check=False, timeout=120)
        workers = lambda: json.loads(pool.ssh(  # noqa: E731
            pool.head, "env", *NO_TOKEN_ENV, "/opt/ray/venv/bin/python", "-c", ALIVE_WORKERS,
            gcs, timeout=60).stdout)
        try:
            wait_for("a peer worker ALIVE", workers, wait_s, step=2)
            return time.time() - demand
        except RuntimeError:
            # Show that the demand was there, and what Ray's autoscaler made of it.
            status = pool.ssh(pool.head, "env", *NO_TOKEN_ENV, "/opt/ray/venv/bin/ray",
                              "status", "--address", gcs, check=False, timeout=60).stdout
            print("  peer: no worker; ray status said:\n" + "\n".join(
                f"    {line}" for line in status.splitlines() if line.strip()), flush=True)
            return float("inf")
    finally:
        stop_peer(pool, config)


def prepare(name: str, idle_s: float, wheelhouse: Path, repo: Path = REPO_ROOT) -> Head:
    """A fresh pool (head + 3 workers), `up` of `repo` with every worker prepared and none
    started, the agent on; a detached actor holds the head's CPUs."""
    pools.remove(name)
    pool = pools.create(name, machines=4)
    source = yaml.safe_load(pool.inventory.read_text())
    source.update(min_workers=0, max_workers=len(pool.workers), idle_timeout_minutes=idle_s / 60)
    pool.inventory.write_text(yaml.safe_dump(source, sort_keys=False))
    print(f"{name}: up (Ray installed from the wheelhouse, workers prepared, none started) ...",
          flush=True)
    playbook(pool, "up", "-e", f"ray_wheelhouse_dir={wheelhouse}", "-e", "ray_up_workers=min",
             "-e", "head_agent_enabled=true", "-e", "head_agent_interval=1", repo=repo)
    head = Head(pool)
    head.python(ACTOR, "blocker", "2", "60")  # the head's CPUs are taken
    return head


def print_table(rows: list[dict[str, float]]) -> None:
    print(f"| {'phase':<24} | {'median s':>8} | {'min s':>6} | {'max s':>6} |")
    print(f"|{'-' * 26}|{'-' * 10}|{'-' * 8}|{'-' * 8}|")
    for key in rows[0] if rows else []:
        values = [row[key] for row in rows]
        print(f"| {key:<24} | {statistics.median(values):8.1f} | {min(values):6.1f} | "
              f"{max(values):6.1f} |")


def compare(args: argparse.Namespace) -> int:
    """The cycles of the baseline checkout and of this one, in turns of --block cycles."""
    baseline = link_collection(args.baseline)
    wheelhouse = ensure_wheelhouse()
    sides = {"before": (f"{args.pool}-base", baseline, flat_wheels(wheelhouse)),
             "after": (args.pool, REPO_ROOT, wheelhouse)}
    rows: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    failures = dict.fromkeys(sides, 0)
    try:
        heads = {side: prepare(name, args.idle_s, wheels, repo)
                 for side, (name, repo, wheels) in sides.items()}
        done = 0
        while done < args.cycles:
            block = range(done + 1, min(done + args.block, args.cycles) + 1)
            for side, head in heads.items():
                print(f"{side}:", flush=True)
                for n in block:
                    try:
                        rows[side].append(cycle(head, n, args.idle_s))
                    except RuntimeError as err:
                        failures[side] += 1
                        print(f"  cycle {n} failed: {err}", flush=True)
            done = block[-1]
    finally:
        if not args.keep:
            for name, _, _ in sides.values():
                pools.remove(name)
    print(f"\nThe agent before ({baseline}) and after (this checkout), each on a local pool of 4 "
          f"machines, in turns of {args.block} cycles; {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}; idle timeout {args.idle_s:.0f} s, one iteration a second")
    for side in sides:
        print(f"\n{side}: {len(rows[side])} of {args.cycles} cycles succeeded, "
              f"{failures[side]} failed\n")
        print_table(rows[side])
    if rows["before"] and rows["after"]:
        print(f"\n| {'phase (median s)':<24} | {'before':>6} | {'after':>6} | "
              f"{'after/before':>12} |")
        print(f"|{'-' * 26}|{'-' * 8}|{'-' * 8}|{'-' * 14}|")
        for key in rows["after"][0]:
            before = statistics.median(row[key] for row in rows["before"])
            after = statistics.median(row[key] for row in rows["after"])
            ratio = f"{after / before:12.2f}" if before > 0 else f"{'-':>12}"
            print(f"| {key:<24} | {before:6.1f} | {after:6.1f} | {ratio} |")
    return 0 if not any(failures.values()) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", default="benchagent")
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--idle-s", type=float, default=6.0, help="the idle timeout, seconds")
    parser.add_argument("--peer-wait", type=float, default=180.0)
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--keep", action="store_true", help="leave the pool running")
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                        help="an earlier checkout of this project, measured in the same run")
    parser.add_argument("--block", type=int, default=5,
                        help="with --baseline: cycles of one side before the other's turn")
    args = parser.parse_args()
    if args.baseline is not None:
        return compare(args)

    wheelhouse = ensure_wheelhouse()
    rows: list[dict[str, float]] = []
    try:
        head = prepare(args.pool, args.idle_s, wheelhouse)
        pool = head.pool
        failures = 0
        for n in range(1, args.cycles + 1):
            try:
                rows.append(cycle(head, n, args.idle_s))
            except RuntimeError as err:
                failures += 1
                print(f"  cycle {n} failed: {err}", flush=True)
        pid = head.ssh("systemctl", "show", "-p", "MainPID", "--value",
                       "onprem-ray-agent.service").strip()
        rss_kb = int(next(line.split()[1] for line in
                          head.ssh("cat", f"/proc/{pid}/status").splitlines()
                          if line.startswith("VmRSS:")))
        peer_s = None
        if not args.no_peer:
            print("peer: ray up on the same machines ...", flush=True)
            playbook(pool, "down")
            peer_s = peer(pool, args.peer_wait)
    finally:
        if not args.keep:
            pools.remove(args.pool)

    print(f"\nAgent on a local pool of 4 machines (head + 3 workers), {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}; {len(rows)} of {args.cycles} cycles succeeded, "
          f"{failures} failed; idle timeout {args.idle_s:.0f} s, one iteration a second\n")
    print_table(rows)
    print(f"\nagent resident memory, idle after the cycles: {rss_kb / 1024:.0f} MB")
    if peer_s is not None and rows:
        ours = statistics.median(row["demand -> ALIVE"] for row in rows)
        shown = "never" if peer_s == float("inf") else f"{peer_s:.1f} s"
        print(f"demand -> worker ALIVE: onprem.ray agent {ours:.1f} s (median), Ray's own "
              f"launcher (ray up, autoscaler v2, local provider) {shown} "
              f"(waited {args.peer_wait:.0f} s)")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
