"""A burst: many pending actors at once on a small pool, then steady load. Prints a table of
the agent's actions; exit status 1 when a limit was broken or an action flapped.

    python bench/burst.py [--actors 200] [--machines 6] [--max-workers 4] [--steady-s 600]
                          [--upscaling-speed 1] [--pool burst] [--keep]

A fresh pool (head + machines - 1 workers), `up` with every worker prepared and none started
(min_workers 0, max_workers below the pool's size, so that the cap is what holds the demand),
the agent under systemd (one iteration a second, idle timeout --idle-s). A detached actor holds
the head's CPUs. Then --actors detached actors of one CPU each are made at once: far more than
max_workers machines can run, so demand stays pending for the whole run. Once max_workers
workers are ALIVE, the load stays as it is for --steady-s seconds.

From the agent's own record of its runs (its state store on the head), the checks:
- never more than max_workers workers added and not yet retired, nor ALIVE in Ray (sampled);
- each add launched at most what upscaling_speed allows at its start: Ray's
  max(1, ceil(upscaling_speed x running)) less the machines joining (not ALIVE yet). Running
  counts the head when it is of the workers' node type (the pool's cluster file has one type)
  and every added worker not known to be still joining; a worker counts as joining at a time
  only when a sample of Ray's ALIVE nodes taken at or after that time did not list it (nodes
  only come up during a burst), so the check is never stricter than what the agent saw;
- during the steady load: no add and no retire at all, and no flap (a machine retired and
  added again within 10 minutes) over the whole run.

A shorter run on a pool a test made: tests/e2e/test_burst.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import chaos

from tests import faults
from tests.pool import pool as pools
from tests.pool.wheelhouse import ensure_wheelhouse

FLAP_WINDOW_S = 600.0  # a machine retired and added again within this is a flap
# The agent's runs, from its state store opened read-only (it keeps every run).
RUNS = """
import json, sqlite3, sys
db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
rows = db.execute("SELECT request_id, kind, ips, started, finished, outcome FROM runs")
print(json.dumps([dict(zip(("request_id", "kind", "ips", "started", "finished", "outcome"), r))
                  for r in rows]))
"""


@dataclass(frozen=True)
class Run:
    kind: str  # add or retire
    ips: tuple[str, ...]
    started: float
    finished: float | None
    outcome: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Run:
        return cls(kind=row["kind"], ips=tuple(json.loads(row["ips"])),
                   started=float(row["started"]),
                   finished=None if row["finished"] is None else float(row["finished"]),
                   outcome=row["outcome"])


@dataclass
class Verdict:
    """What the runs of a burst show, against the limits."""

    adds: int = 0
    machines_added: int = 0
    retires: int = 0
    machines_retired: int = 0
    peak_added: int = 0  # the most workers added and not yet retired at once
    launches: list[tuple[int, int]] = field(default_factory=list)  # (launched, allowed) per add
    actions_during_steady: int = 0
    flaps: int = 0
    problems: list[str] = field(default_factory=list)


Sample = tuple[float, frozenset[str]]  # when a query of Ray began, the workers it found ALIVE


def judge(runs: Sequence[Run], samples: Sequence[Sample], *, since: float, steady_from: float,
          max_workers: int, upscaling_speed: float, head_of_worker_type: bool) -> Verdict:
    """The checks of the module docstring, on the runs started at or after `since`."""
    runs = sorted((r for r in runs if r.started >= since), key=lambda r: r.started)
    verdict = Verdict()
    retired_at: dict[str, float] = {}
    for run in runs:
        if run.kind == "add":
            verdict.adds += 1
            verdict.machines_added += len(run.ips)
            for ip in run.ips:
                if ip in retired_at and run.started - retired_at[ip] <= FLAP_WINDOW_S:
                    verdict.flaps += 1
                    verdict.problems.append(f"{ip} retired and added again "
                                            f"{run.started - retired_at[ip]:.0f} s later")
            added = _added(runs, run.started, before=True)
            joining = {ip for ip in added
                       if any(at >= run.started and ip not in alive for at, alive in samples)}
            running = len(added - joining) + int(head_of_worker_type)
            allowed = max(0, max(1, math.ceil(upscaling_speed * max(running, 1)))
                          - len(joining))
            verdict.launches.append((len(run.ips), allowed))
            if len(run.ips) > allowed:
                verdict.problems.append(
                    f"an add launched {len(run.ips)} machine(s) with {running} running and "
                    f"{len(joining)} joining: upscaling_speed allows {allowed}")
        elif run.kind == "retire":
            verdict.retires += 1
            verdict.machines_retired += len(run.ips)
            for ip in run.ips:
                retired_at[ip] = run.finished if run.finished is not None else run.started
        if run.started >= steady_from and run.kind in ("add", "retire"):
            verdict.actions_during_steady += 1
            verdict.problems.append(f"{run.kind} of {', '.join(run.ips)} during the steady load")
        verdict.peak_added = max(verdict.peak_added, len(_added(runs, run.started)))
    if verdict.peak_added > max_workers:
        verdict.problems.append(f"{verdict.peak_added} workers added at once: "
                                f"max_workers is {max_workers}")
    return verdict


def _added(runs: Sequence[Run], at: float, before: bool = False) -> set[str]:
    """Workers added by `at` (their add started, before `at` only if `before`, and has not
    failed) and not retired by then; `runs` in the order they started."""
    added: set[str] = set()
    for run in runs:
        if run.started > at or (before and run.started == at):
            break
        ended = run.finished is not None and run.finished <= at
        if run.kind == "add" and not (ended and run.outcome != "successful"):
            added.update(run.ips)
        elif run.kind == "retire" and ended:
            added.difference_update(run.ips)
    return added


@dataclass
class Outcome:
    actors: int
    max_workers: int
    upscaling_speed: float
    verdict: Verdict
    served_s: float | None  # from the burst to max_workers workers ALIVE
    steady_s: float
    peak_alive: int  # the most ALIVE workers Ray showed in the samples
    samples: int
    checks: faults.Report

    @property
    def failed(self) -> bool:
        return (bool(self.verdict.problems) or self.served_s is None
                or self.peak_alive > self.max_workers or not self.checks.clean)


def runs(made: chaos.Chaos) -> list[Run]:
    result = made.ssh("sudo", "python3", "-c", RUNS, f"{chaos.STATE_DIR}/state.db", timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"the agent's runs on {made.head_ip}: {result.stderr[-500:]}")
    return [Run.from_row(row) for row in json.loads(result.stdout)]


def burst(made: chaos.Chaos, actors: int, max_workers: int, upscaling_speed: float,
          steady_s: float, serve_within_s: float = 600.0,
          log: Callable[[str], None] = print) -> Outcome:
    """The burst on a prepared pool (`chaos.prepare` with these max_workers and
    upscaling_speed; the pool's cluster file, one node type for the head and the workers),
    the steady load, then the actors killed."""
    since = time.time()  # the pool's machines share this host's clock
    made_actors = made.ray(chaos.CREATE, "burst", "1", str(actors))
    if made_actors.returncode != 0:
        raise RuntimeError(f"the burst's actors: {made_actors.stderr[-1500:]}")
    log(f"{actors} actors made; waiting for {max_workers} workers ALIVE")
    samples: list[Sample] = []

    def sample() -> int:
        at, nodes = time.time(), made.nodes()
        if nodes:  # Ray answered: its list has the head at least
            samples.append((at, frozenset(faults.alive_workers(nodes, made.head_ip))))
        return len(samples[-1][1]) if samples else 0

    served_s = None
    deadline = time.monotonic() + serve_within_s
    while time.monotonic() < deadline:
        if sample() >= max_workers:
            served_s = time.time() - since
            break
        time.sleep(1)
    steady_from = time.time()
    log(f"steady load for {steady_s:.0f} s"
        if served_s is not None else "max_workers never reached: steady load skipped")
    while served_s is not None and time.time() - steady_from < steady_s:
        sample()
        time.sleep(2)
    status, error = made.status()
    checks = faults.check_pool(status, made.nodes(), made.inventory, made.head_ip, error)
    verdict = judge(runs(made), samples, since=since, steady_from=steady_from,
                    max_workers=max_workers, upscaling_speed=upscaling_speed,
                    head_of_worker_type=True)
    made.ray(chaos.KILL_ACTORS, "burst", str(actors))
    peak = max((len(alive) for _, alive in samples), default=0)
    return Outcome(actors=actors, max_workers=max_workers, upscaling_speed=upscaling_speed,
                   verdict=verdict, served_s=served_s, steady_s=steady_s, peak_alive=peak,
                   samples=len(samples), checks=checks)


def table(outcome: Outcome) -> str:
    v = outcome.verdict
    launches = ", ".join(f"{n} (allowed {a})" for n, a in v.launches) or "none"
    rows = [
        ("pending actors at once", outcome.actors),
        ("max_workers / upscaling_speed", f"{outcome.max_workers} / {outcome.upscaling_speed:g}"),
        ("add runs (machines)", f"{v.adds} ({v.machines_added})"),
        ("machines per add, in order", launches),
        ("retire runs (machines)", f"{v.retires} ({v.machines_retired})"),
        ("most workers added at once", v.peak_added),
        (f"most workers ALIVE in Ray ({outcome.samples} samples)", outcome.peak_alive),
        ("burst to max_workers ALIVE (s)",
         "never" if outcome.served_s is None else f"{outcome.served_s:.0f}"),
        (f"adds and retires during {outcome.steady_s:.0f} s of steady load",
         v.actions_during_steady),
        ("flaps (retired, added again within 10 min)", v.flaps),
        *((name, outcome.checks.counts[name]) for name in faults.MUST_BE_ZERO),
    ]
    width = max(len(name) for name, _ in rows)
    value_width = max(len(str(value)) for _, value in rows)
    lines = [f"| {'':<{width}} | {'result':>{value_width}} |",
             f"|{'-' * (width + 2)}|{'-' * (value_width + 2)}|"]
    lines += [f"| {name:<{width}} | {value!s:>{value_width}} |" for name, value in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--actors", type=int, default=200)
    parser.add_argument("--machines", type=int, default=6, help="head + workers")
    parser.add_argument("--max-workers", type=int, default=4)
    parser.add_argument("--upscaling-speed", type=float, default=1.0)
    parser.add_argument("--steady-s", type=float, default=600.0)
    parser.add_argument("--idle-s", type=float, default=10.0, help="the idle timeout, seconds")
    parser.add_argument("--pool", default="burst")
    parser.add_argument("--keep", action="store_true", help="leave the pool running")
    args = parser.parse_args()
    if not 0 < args.max_workers < args.machines - 1:
        parser.error("--max-workers must be below the pool's workers (--machines - 1), so that "
                     "the cap is what holds the demand")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"

    wheelhouse = ensure_wheelhouse()
    pools.remove(args.pool)
    pool = pools.create(args.pool, machines=args.machines)
    try:
        print("up (Ray installed from the wheelhouse, workers prepared, none started) ...",
              flush=True)
        made = chaos.prepare(pool, wheelhouse, args.idle_s, pool.state_dir,
                             max_workers=args.max_workers, upscaling_speed=args.upscaling_speed)
        outcome = burst(made, args.actors, args.max_workers, args.upscaling_speed,
                        args.steady_s, log=lambda line: print(line, flush=True))
    finally:
        if not args.keep:
            pools.remove(args.pool)
    print(f"\nBurst on a local pool of {args.machines} machines (head + {args.machines - 1} "
          f"workers), idle timeout {args.idle_s:.0f} s, one iteration a second\n")
    print(table(outcome))
    for problem in outcome.verdict.problems:
        print(f"PROBLEM: {problem}")
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    sys.exit(main())
