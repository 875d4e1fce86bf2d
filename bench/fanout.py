"""Fan-out benchmark on the local test pool: prints a table, asserts nothing.

    python bench/fanout.py [--pool fanout] [--machines 24] [--sizes 1,5,20] [--repeat 3]
                           [--start-at-once 5] [--forks N] [--keep]

On a fresh pool of `--machines` machines (a head and the rest workers, the agent off so that
only the playbooks act), rows:

  up, prepare only, bare machines    Ray installed everywhere from the host's wheelhouse, Ray
                                     started on the head only (ray_up_workers=none); once
  up again, nothing changed          on every machine, and with --limit on the head and 3
                                     workers: the controller's share of a wider run
  add_workers N, check mode          the add of N workers in one run with --check: every probe
                                     and check, no Ray start: the playbook's own share
  add_workers N                      N workers started (ALIVE in Ray) in one run, for each N of
                                     --sizes up to --start-at-once
  retire_workers N                   N workers drained and stopped in one run (those above
                                     --start-at-once were started before in runs of that many)

Each row gives the wall time of ansible-playbook (median, min and max of --repeat runs), the
time of its "wait until ALIVE" task (Ray's own start and registration, from profile_tasks), and
the rest: the playbook's own time, and the controller's CPU time (ansible-playbook and the
processes it runs: its forks, ssh), which a controller with more cores spreads. Ansible's forks
are --forks (default: one per machine, so that no task waits for a free fork; the table's
settings say what ran). The slowest tasks of the widest runs follow the table (profile_tasks).

The pool's machines share this host's CPUs: node-side work (Ray's start) serializes here where
a real fleet runs it in parallel, and beyond a few Ray starts at once it fails here (a Ray node
that has not registered within 30 s of its start gives up: `ray start` has that limit built in,
and 20 starts on 2 cores take longer). So an add of more workers than --start-at-once is
measured in check mode only; the check-mode run of N plus one Ray start is the add of N with
the nodes' Ray starts in parallel, as on a fleet, but with the controller's work and the
nodes' module runs still sharing this host's CPUs (the controller CPU column says how much of
it a controller with more cores would spread).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.pool import pool as pools  # noqa: E402
from tests.pool.wheelhouse import ensure_wheelhouse  # noqa: E402

RECAP = re.compile(r"^\S+\s+: ok=\d+\s+changed=(\d+)", re.MULTILINE)
# profile_tasks' summary lines: "<role> : <task> ---- 1.23s"
TASK_TIME = re.compile(r"^(.*?) -+ (\d+\.\d+)s$", re.MULTILINE)
RAY_START_TASK = "wait until this node is ALIVE in Ray"
SOURCE = re.compile(r"\(.*?\) =")  # where ansible-config found a setting


def ansible_env() -> dict[str, str]:
    return {**os.environ, "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg")}


class Run(NamedTuple):
    wall: float  # seconds of ansible-playbook, start to exit
    ray_start: float  # seconds of its wait-until-ALIVE tasks (profile_tasks)
    changed: int
    controller_cpu: float  # CPU seconds of ansible-playbook and its processes (forks, ssh)
    tasks: list[tuple[str, float]]  # profile_tasks: each task's seconds, slowest first


def controller_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def playbook(pool: pools.Pool, name: str, *extra: str) -> Run:
    env = {**ansible_env(),
           "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
           "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "all"}
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(pool.inventory),
            f"onprem.ray.{name}", *extra]
    started, cpu = time.monotonic(), controller_cpu()
    result = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, check=False)
    elapsed, cpu = time.monotonic() - started, controller_cpu() - cpu
    if result.returncode != 0:
        failures = "\n".join(line for line in result.stdout.splitlines()
                              if line.startswith(("fatal:", "failed:")) or "msg:" in line)
        sys.exit(f"{' '.join(argv)} failed after {elapsed:.1f} s:\n{failures[-8000:]}\n"
                 f"{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    tasks = [(task, float(s))
             for task, s in TASK_TIME.findall(result.stdout.split("TASKS RECAP", 1)[-1])]
    ray_start = sum(s for task, s in tasks if RAY_START_TASK in task)
    return Run(elapsed, ray_start, sum(int(c) for c in RECAP.findall(result.stdout)), cpu, tasks)


class Table:
    def __init__(self) -> None:
        self.rows: dict[str, list[Run]] = {}

    def add(self, label: str, run: Run) -> None:
        self.rows.setdefault(label, []).append(run)
        print(f"  {label}: {run.wall:.1f} s (Ray's start {run.ray_start:.1f} s, controller CPU "
              f"{run.controller_cpu:.1f} s), changed {run.changed}", flush=True)

    def median(self, label: str, field: str = "wall") -> float:
        return statistics.median(getattr(r, field) for r in self.rows[label])

    def print(self) -> None:
        print(f"| {'run':<38} | {'runs':>4} | {'median s':>8} | {'min s':>6} | {'max s':>6} | "
              f"{'Ray start s':>11} | {'outside s':>9} | {'controller CPU s':>16} | "
              f"{'changed':>7} |")
        print(f"|{'-' * 40}|{'-' * 6}|{'-' * 10}|{'-' * 8}|{'-' * 8}|{'-' * 13}|{'-' * 11}|"
              f"{'-' * 18}|{'-' * 9}|")
        for label, rows in self.rows.items():
            wall = [r.wall for r in rows]
            outside = statistics.median(r.wall - r.ray_start for r in rows)
            changed = "/".join(sorted({str(r.changed) for r in rows}))
            print(f"| {label:<38} | {len(rows):4d} | {statistics.median(wall):8.1f} | "
                  f"{min(wall):6.1f} | {max(wall):6.1f} | {self.median(label, 'ray_start'):11.1f} "
                  f"| {outside:9.1f} | {self.median(label, 'controller_cpu'):16.1f} | "
                  f"{changed:>7} |")

    def slowest_tasks(self, label: str, count: int = 8) -> str:
        """The slowest tasks of the last run of `label` (profile_tasks)."""
        tasks = self.rows[label][-1].tasks[:count]
        return "\n".join(f"  {seconds:6.2f} s  {task}" for task, seconds in tasks)


def settings() -> str:
    """What ansible.cfg changed (forks, pipelining, ssh_args with ControlPersist), and the
    strategy, as ansible-config reports them."""
    env = ansible_env()
    config = str(Path(sys.executable).parent / "ansible-config")
    changed = subprocess.run([config, "dump", "--only-changed", "-t", "all"], cwd=REPO_ROOT,
                             env=env, capture_output=True, text=True, check=False).stdout
    strategy = subprocess.run([config, "dump"], cwd=REPO_ROOT, env=env, capture_output=True,
                              text=True, check=False).stdout
    lines = [line for line in changed.splitlines()
             if line.startswith(("DEFAULT_FORKS", "pipelining", "ssh_args"))]
    lines += [line for line in strategy.splitlines() if line.startswith("DEFAULT_STRATEGY(")]
    return "\n".join("  " + SOURCE.sub(" =", line) for line in lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", default="fanout")
    parser.add_argument("--machines", type=int, default=24)
    parser.add_argument("--sizes", default="1,5,20", help="workers per add / retire run")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each row (median)")
    parser.add_argument("--start-at-once", type=int, default=5,
                        help="the most Ray starts in one run this host takes (2 cores: 5)")
    parser.add_argument("--forks", type=int, default=0,
                        help="Ansible's forks (default: one per machine)")
    parser.add_argument("--keep", action="store_true", help="leave the pool running")
    args = parser.parse_args()
    os.environ["ANSIBLE_FORKS"] = str(args.forks or args.machines)
    sizes = [int(n) for n in args.sizes.split(",")]
    if max(sizes) > args.machines - 1:
        parser.error(f"--sizes {args.sizes}: the pool has {args.machines - 1} workers")

    wheelhouse = ensure_wheelhouse()
    common = ("-e", f"ray_wheelhouse_dir={wheelhouse}", "-e", "head_agent_enabled=false")
    up = ("up", *common, "-e", "ray_up_workers=none")
    pools.remove(args.pool)
    pool = pools.create(args.pool, machines=args.machines)
    small = ",".join([pool.head.ip] + [m.ip for m in pool.workers[:3]])
    table = Table()
    try:
        table.add("up, prepare only, bare machines", playbook(pool, *up))
        for run in range(1, args.repeat + 1):
            print(f"run {run} of {args.repeat}:", flush=True)
            table.add(f"up again, nothing changed ({args.machines})", playbook(pool, *up))
            table.add("up again, nothing changed (4, --limit)",
                      playbook(pool, *up, "--limit", small))
            for size in sizes:
                workers = [m.ip for m in pool.workers[:size]]
                hosts = ",".join(workers)
                table.add(f"add_workers {size}, check mode",
                          playbook(pool, "add_workers", *common, "--check", "--limit", hosts))
                if size <= args.start_at_once:
                    table.add(f"add_workers {size}",
                              playbook(pool, "add_workers", *common, "--limit", hosts))
                else:
                    for first in range(0, size, args.start_at_once):
                        batch = ",".join(workers[first:first + args.start_at_once])
                        playbook(pool, "add_workers", *common, "--limit", batch)
                    print(f"  ({size} workers started in runs of {args.start_at_once})",
                          flush=True)
                table.add(f"retire_workers {size}",
                          playbook(pool, "retire_workers", *common, "--limit", hosts))
    finally:
        if not args.keep:
            pools.remove(args.pool)

    print(f"\nFan-out on a local pool of {args.machines} machines (head + "
          f"{args.machines - 1} workers), {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}; medians of {args.repeat} runs (the bare `up` once)\n")
    table.print()
    print()
    one, most = sizes[0], sizes[-1]
    for label in ("add_workers {}, check mode", "add_workers {}", "retire_workers {}"):
        if label.format(most) in table.rows:
            low, high = table.median(label.format(one)), table.median(label.format(most))
            print(f"{label.format(most)}: {high:.1f} s; {label.format(one)}: {low:.1f} s "
                  f"(ratio {high / low:.2f}; target at most 2)")
    ray_start = table.median(f"add_workers {one}", "ray_start")
    low = table.median(f"add_workers {one}, check mode") + ray_start
    high = table.median(f"add_workers {most}, check mode") + ray_start
    print(f"add_workers with the nodes' Ray starts in parallel (check-mode run + one Ray "
          f"start, {ray_start:.1f} s; the controller and the nodes' module runs still on this "
          f"host's CPUs): {most} at once {high:.1f} s, {one} {low:.1f} s "
          f"(ratio {high / low:.2f}; target at most 2)")
    wide = table.median(f"up again, nothing changed ({args.machines})")
    narrow = table.median("up again, nothing changed (4, --limit)")
    print(f"up with nothing changed: {args.machines} machines {wide:.1f} s, 4 machines "
          f"{narrow:.1f} s (ratio {wide / narrow:.2f})")
    for label in (f"add_workers {most}, check mode", f"retire_workers {most}",
                  f"up again, nothing changed ({args.machines})"):
        print(f"\nSlowest tasks of `{label}` (profile_tasks, last run):\n"
              f"{table.slowest_tasks(label)}")
    print(f"\nAnsible settings (ansible-config dump):\n{settings()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
