"""Benchmark of `up` on the local test pool: prints a table, asserts nothing.

    python bench/up.py [--pool bench] [--machines 4] [--repeat 3] [--no-peer] [--keep]
    python bench/up.py --baseline CHECKOUT [--repeat 3]     before and after, same run

With --baseline, each checkout runs alone on its own pool (the other side's pool is removed
first), with the agent enabled on both (`-e head_agent_enabled=true`: older checkouts had it off
by default).

Rows, on a fresh pool of `--machines` machines (a head and the rest workers, every worker
started with ray_up_workers=all):

  up, bare machines        Ray installed from the host's wheelhouse, then started everywhere
  up again                 nothing changed (changed=0 expected, no restart)
  down
  up, Ray preinstalled     after `down`: the venv is there, units and token are not
  up again                 nothing changed
  ray up (peer)            Ray 2.60's own launcher on the same machines after `down`, with a
                           local-provider YAML that starts Ray from the same venv; its time to
                           return, and how many nodes Ray has ALIVE when it returns and
                           `--peer-wait` seconds later (its autoscaler starts the workers)
  ray up again (peer)      nothing changed

Each row gives the wall time of `ansible-playbook` (from its start until it returns, i.e.
until every node is ALIVE in Ray), the changed count of the play recap, how many Ray units
were (re)started during the run, and how many nodes Ray has ALIVE afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.pool import pool as pools  # noqa: E402
from tests.pool.wheelhouse import ensure_wheelhouse  # noqa: E402

NODES = """
import json, sys
from ray._raylet import GcsClient
from ray.core.generated import gcs_pb2
nodes = GcsClient(address=sys.argv[1]).get_all_node_info(timeout=10).values()
print(json.dumps([n.node_manager_address for n in nodes if n.state == gcs_pb2.GcsNodeInfo.ALIVE]))
"""
RECAP = re.compile(r"^\S+\s+: ok=\d+\s+changed=(\d+)", re.MULTILINE)


def playbook(pool: pools.Pool, name: str, *extra: str, repo: Path = REPO_ROOT
             ) -> tuple[float, int]:
    """Runs the playbook of the checkout `repo` (its ansible.cfg and collection link)."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(repo / "ansible.cfg")}
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(pool.inventory),
            f"onprem.ray.{name}", *extra]
    started = time.monotonic()
    result = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True,
                            check=False)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}")
    return elapsed, sum(int(c) for c in RECAP.findall(result.stdout))


def peer_yaml(pool: pools.Pool, path: Path) -> Path:
    """A Ray local-provider cluster YAML for the same machines, Ray from the same venv."""
    ray = "/opt/ray/venv/bin/ray"
    config = {
        "cluster_name": f"{pool.name}-peer",
        "provider": {"type": "local", "head_ip": pool.head.ip,
                     "worker_ips": [m.ip for m in pool.workers]},
        "auth": {"ssh_user": pools.SSH_USER, "ssh_private_key": str(pool.private_key)},
        "min_workers": len(pool.workers),
        "max_workers": len(pool.workers),
        "head_start_ray_commands": [
            f"{ray} stop",
            f"{ray} start --head --port=6379 --autoscaling-config=~/ray_bootstrap_config.yaml"],
        "worker_start_ray_commands": [f"{ray} stop",
                                      f"{ray} start --address=$RAY_HEAD_IP:6379"],
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def ray_cli(*args: str, timeout: float = 600) -> tuple[float, int, str]:
    ray = str(Path(sys.executable).parent / "ray")
    started = time.monotonic()
    result = subprocess.run([ray, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=timeout, check=False)
    return time.monotonic() - started, result.returncode, result.stdout + result.stderr


def raylets(pool: pools.Pool) -> dict[str, str]:
    """The raylet's PID on each machine ('' where none runs): a changed PID is a restart."""
    out = {}
    for machine in pool.machines:
        result = pool.ssh(machine, "pgrep", "-x", "raylet", check=False)
        out[machine.ip] = result.stdout.strip()
    return out


def restarts(before: dict[str, str], after: dict[str, str]) -> int:
    return sum(1 for ip in after if before[ip] and after[ip] != before[ip])


def alive(pool: pools.Pool, token: bool = True) -> int:
    env = (["RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN_PATH=/etc/ray/auth_token"] if token
           else ["RAY_AUTH_MODE=disabled"])
    result = pool.ssh(pool.head, "sudo", "env", *env, "/opt/ray/venv/bin/python",
                      "-c", NODES, f"{pool.head.ip}:6379", check=False, timeout=60)
    return len(json.loads(result.stdout)) if result.returncode == 0 else 0


def wait_alive(pool: pools.Pool, want: int, limit_s: float, token: bool) -> tuple[float, int]:
    """Seconds until `want` nodes are ALIVE (or `limit_s`), and the count then."""
    started = time.monotonic()
    nodes = alive(pool, token)
    while nodes < want and time.monotonic() - started < limit_s:
        time.sleep(1)
        nodes = alive(pool, token)
    return time.monotonic() - started, nodes


class Table:
    """Rows of repeated measurements; printed as medians."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[float, str, int, int]]] = {}

    def add(self, label: str, seconds: float, changed: str, restarted: int, nodes: int) -> None:
        self.rows.setdefault(label, []).append((seconds, changed, restarted, nodes))
        print(f"  {label}: {seconds:.1f} s, changed {changed}, restarts {restarted}, "
              f"ALIVE {nodes}", flush=True)

    def median(self, label: str) -> float:
        return statistics.median(r[0] for r in self.rows[label])

    def print(self) -> None:
        print(f"| {'run':<46} | {'runs':>4} | {'median s':>8} | {'min s':>6} | {'max s':>6} | "
              f"{'changed':>7} | {'restarts':>8} | {'ALIVE':>5} |")
        print(f"|{'-' * 48}|{'-' * 6}|{'-' * 10}|{'-' * 8}|{'-' * 8}|{'-' * 9}|{'-' * 10}|"
              f"{'-' * 7}|")
        for label, rows in self.rows.items():
            seconds = [r[0] for r in rows]
            changed = "/".join(sorted({r[1] for r in rows}))
            print(f"| {label:<46} | {len(rows):4d} | {statistics.median(seconds):8.1f} | "
                  f"{min(seconds):6.1f} | {max(seconds):6.1f} | {changed:>7} | "
                  f"{max(r[2] for r in rows):8d} | {min(r[3] for r in rows):5d} |")


def ours(pool: pools.Pool, table: Table, label: str, *call: str, repo: Path = REPO_ROOT
         ) -> None:
    before = raylets(pool)
    seconds, changed = playbook(pool, *call, repo=repo)
    table.add(label, seconds, str(changed), restarts(before, raylets(pool)),
              alive(pool) if call[0] != "down" else 0)


def peer(pool: pools.Pool, table: Table, config: Path, label: str, wait_s: float) -> None:
    before = raylets(pool)
    seconds, rc, output = ray_cli("up", "-y", "--no-config-cache", str(config))
    if rc != 0:
        print(f"  ray up failed (rc {rc}):\n{output[-3000:]}", flush=True)
    at_return = alive(pool, token=False)
    table.add(f"{label}: until it returns (ALIVE then)", seconds, "-",
              restarts(before, raylets(pool)), at_return)
    extra, nodes = wait_alive(pool, len(pool.machines), wait_s, token=False)
    # inf: not every node ALIVE within --peer-wait
    complete = seconds + extra if nodes == len(pool.machines) else float("inf")
    table.add(f"{label}: until all ALIVE", complete, "-", 0, nodes)


def stop_peer(pool: pools.Pool, config: Path) -> None:
    """`ray down`, then `ray stop --force` wherever it left a raylet running."""
    ray_cli("down", "-y", str(config))
    left = [ip for ip, pid in raylets(pool).items() if pid]
    if left:
        print(f"  ray down left Ray running on {', '.join(left)}: ray stop --force there",
              flush=True)
    for machine in pool.machines:
        pool.ssh(machine, "/opt/ray/venv/bin/ray", "stop", "--force", check=False, timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", default="bench")
    parser.add_argument("--machines", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each row (median)")
    parser.add_argument("--peer-wait", type=float, default=120.0,
                        help="seconds to wait after `ray up` returns for every node ALIVE")
    parser.add_argument("--no-peer", action="store_true", help="skip Ray's `ray up`")
    parser.add_argument("--keep", action="store_true", help="leave the pool running")
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                        help="another checkout (e.g. `git worktree add /tmp/before main`): "
                             "its `up` rows are measured too, first, on a pool of their own, "
                             "labelled 'before:'")
    args = parser.parse_args()
    if args.baseline is not None:
        return compare(args)

    wheelhouse = ensure_wheelhouse()
    pools.remove(args.pool)
    pool = pools.create(args.pool, machines=args.machines)
    up = ("up", "-e", f"ray_wheelhouse_dir={wheelhouse}", "-e", "ray_up_workers=all")
    table = Table()
    config = peer_yaml(pool, pool.state_dir / "ray-up-peer.yaml")
    try:
        print("bare machines:", flush=True)
        ours(pool, table, "up, bare machines (wheelhouse install)", *up)
        ours(pool, table, "up again, nothing changed", *up)
        for run in range(1, args.repeat + 1):
            print(f"run {run} of {args.repeat}:", flush=True)
            ours(pool, table, "down", "down")
            ours(pool, table, "up, Ray preinstalled", *up)
            ours(pool, table, "up again, nothing changed", *up)
            if args.no_peer:
                continue
            ours(pool, table, "down", "down")
            peer(pool, table, config, "ray up (peer), Ray preinstalled", args.peer_wait)
            peer(pool, table, config, "ray up again (peer)", args.peer_wait)
            stop_peer(pool, config)
    finally:
        if not args.keep:
            pools.remove(args.pool)

    print(f"\n`up` on a local pool of {args.machines} machines (head + {args.machines - 1} "
          f"workers), {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; medians of "
          f"{args.repeat} runs; inf: not every node ALIVE within --peer-wait "
          f"{args.peer_wait:.0f} s\n")
    table.print()
    if not args.no_peer:
        ours_s = table.median("up, Ray preinstalled")
        peer_s = table.median("ray up (peer), Ray preinstalled: until all ALIVE")
        print(f"\nhead + {args.machines - 1} workers ALIVE from a stopped cluster: onprem.ray up "
              f"{ours_s:.1f} s, ray up {peer_s:.1f} s (ratio {peer_s / ours_s:.2f})")
    return 0


def link_collection(checkout: Path) -> Path:
    """The checkout linked in as the collection onprem.ray, as `make setup` does."""
    checkout = checkout.resolve()
    if not (checkout / "ansible.cfg").is_file():
        sys.exit(f"--baseline {checkout}: not a checkout of this project (no ansible.cfg)")
    namespace = checkout / ".cache" / "collections" / "ansible_collections" / "onprem"
    namespace.mkdir(parents=True, exist_ok=True)
    if not (namespace / "ray").exists():
        (namespace / "ray").symlink_to("../../../..")
    return checkout


def flat_wheels(wheelhouse: Path) -> Path:
    """Checkouts before the wheelhouse per Python read a flat directory of wheels: this host's
    Python's part of the wheelhouse (the same wheels)."""
    return next(p.parent for p in sorted(wheelhouse.glob("*/.complete")))


def keep_every_worker(pool: pools.Pool) -> None:
    """min_workers = every worker: an agent (on by default since the head role runs it) keeps
    them all, so that "nothing changed" measures `up` and not the agent's retires."""
    source = yaml.safe_load(pool.inventory.read_text())
    source["min_workers"] = len(pool.workers)
    pool.inventory.write_text(yaml.safe_dump(source, sort_keys=False))


def compare(args: argparse.Namespace) -> int:
    """`up` of the baseline checkout, then of this one, each alone on a pool of its own: an
    idle Ray cluster beside the one measured would take a share of the same cores. The agent
    runs on both sides (head_agent_enabled=true), as it does by default in this checkout."""
    baseline = link_collection(args.baseline)
    wheelhouse = ensure_wheelhouse()
    sides = {"before": (f"{args.pool}-base", baseline, flat_wheels(wheelhouse)),
             "after": (args.pool, REPO_ROOT, wheelhouse)}
    table = Table()
    for side, (name, repo, wheels) in sides.items():
        up = ("up", "-e", f"ray_wheelhouse_dir={wheels}", "-e", "ray_up_workers=all",
              "-e", "head_agent_enabled=true")
        pools.remove(name)
        pool = pools.create(name, machines=args.machines)
        keep_every_worker(pool)
        try:
            print(f"{side}: bare machines", flush=True)
            ours(pool, table, f"{side}: up, bare machines", *up, repo=repo)
            for run in range(1, args.repeat + 1):
                print(f"{side}: run {run} of {args.repeat}:", flush=True)
                for row, call in (("up again, nothing changed", up), ("down", ("down",)),
                                  ("up, Ray preinstalled", up)):
                    ours(pool, table, f"{side}: {row}", *call, repo=repo)
        finally:
            if not args.keep:
                pools.remove(name)
    print(f"\n`up` before ({baseline}) and after (this checkout), each alone on a local "
          f"pool of {args.machines} machines, the agent on; {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}; medians of {args.repeat} runs\n")
    table.print()
    for row in ("up again, nothing changed", "up, Ray preinstalled"):
        before, after = table.median(f"before: {row}"), table.median(f"after: {row}")
        print(f"{row}: before {before:.1f} s, after {after:.1f} s "
              f"(after / before {after / before:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
