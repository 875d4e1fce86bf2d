"""What autoscaling costs: a day of demand on a simulated 1,000-machine pool, per policy setting.

The agent's real decision (`onprem_ray_agent.policy.decide`) and lifecycle
(`onprem_ray_agent.transitions`) run against a simulated Ray and simulated playbooks whose
latencies are drawn from measured distributions (`bench/sim/latency.py`). For each setting of
`idle_timeout_minutes` x `upscaling_speed` it prints the wait of demand (p50, p95, max),
machine-hours, adds, retires and flaps, beside two references on the same trace: every machine
always on, and the oracle lower bound (a machine on exactly while work needs it). It writes
three PNG plots. docs/scaling.md shows and explains the committed run.

    .venv/bin/python bench/simulate.py --out docs/img/scaling        # the full run
    .venv/bin/python bench/simulate.py --hours 3 --pool-fraction 0.1 --out /tmp/sim
    .venv/bin/python bench/simulate.py --trace history.jsonl --cluster-file cluster.yml
    .venv/bin/python bench/simulate.py --write-trace day.jsonl       # the synthetic trace
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import importlib.util
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "agent"))
sys.path.insert(0, str(ROOT / ".cache" / "collections"))  # onprem.ray, which the agent imports
sys.path.insert(0, str(ROOT / "bench"))

from sim import workload  # noqa: E402
from sim.engine import Result, Simulation  # noqa: E402
from sim.report import plots, row, table  # noqa: E402
from sim.trace import TraceError, read_trace, write_trace  # noqa: E402

from onprem_ray_agent.model import Config, NodeType  # noqa: E402

IDLE_MINUTES = (1.0, 5.0, 15.0)
SPEEDS = (1.0, 10.0)


def pool_config(pool: tuple[workload.PoolType, ...]) -> Config:
    return Config(head_ip=workload.HEAD_IP,
                  node_types=tuple(NodeType(t.name, t.ips(), t.resources) for t in pool))


def label(config: Config) -> str:
    return (f"idle {config.idle_timeout_minutes:g} min, speed {config.upscaling_speed:g}"
            + (f", launches {config.max_concurrent_launches}"
               if config.max_concurrent_launches != Config.max_concurrent_launches else ""))


def settings(base: Config, idle: list[float], speeds: list[float],
             launches: list[int]) -> list[Config]:
    return [dataclasses.replace(base, idle_timeout_minutes=i, upscaling_speed=s,
                                max_concurrent_launches=c)
            for c in launches for i in idle for s in speeds]


def _cluster_config(path: str) -> Config:
    from onprem_ray_agent.config import ConfigError, load_config

    try:
        config = load_config(path).config
    except ConfigError as err:
        sys.exit(f"simulate: {err}")
    unknown = [t.name for t in config.node_types if not t.resources]
    if unknown:
        sys.exit(f"simulate: {path}: node types {', '.join(unknown)} declare no resources; "
                 "the simulation needs each type's resources in the cluster file")
    return config


def _simulate(run: tuple) -> tuple[Result, float]:
    config, works, horizon, interval, seed = run
    started = time.process_time()
    result = Simulation(config, works, label=label(config), horizon_s=horizon,
                        interval_s=interval, seed=seed).run()
    return result, time.process_time() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="demand and latency seed")
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours of demand")
    parser.add_argument("--pool-fraction", type=float, default=1.0,
                        help="simulate this fraction of the 1,000 machines, with demand "
                             "scaled alike (default 1)")
    parser.add_argument("--interval", type=float, default=5.0,
                        help="the agent's loop interval, s (default 5, the agent's)")
    parser.add_argument("--idle", type=float, nargs="+", default=list(IDLE_MINUTES),
                        metavar="MIN", help="idle_timeout_minutes values")
    parser.add_argument("--speed", type=float, nargs="+", default=list(SPEEDS),
                        help="upscaling_speed values")
    parser.add_argument("--launches", type=int, nargs="+",
                        default=[Config.max_concurrent_launches],
                        help="max_concurrent_launches values (default: the agent's 10)")
    parser.add_argument("--trace", metavar="FILE",
                        help="replay this trace (docs/scaling.md) instead of the synthetic day")
    parser.add_argument("--cluster-file", metavar="FILE",
                        help="the pool of a cluster file instead of the simulated 1,000 "
                             "machines (each node type must declare its resources)")
    parser.add_argument("--write-trace", metavar="FILE",
                        help="write the synthetic trace to FILE and exit")
    parser.add_argument("--jobs", type=int, default=2,
                        help="settings simulated at once, one process each (default 2)")
    parser.add_argument("--out", metavar="DIR", help="write the plots and table.md here")
    parser.add_argument("--focus", default="idle 5 min, speed 1",
                        help="the setting drawn over the demand (default: the agent's defaults)")
    args = parser.parse_args(argv)

    if args.out and importlib.util.find_spec("matplotlib") is None:
        print("simulate: the plots need matplotlib, which is not installed: "
              "pip install -r requirements/dev.txt (or drop --out for the table only)",
              file=sys.stderr)
        return 2
    pool = workload.scaled_pool(args.pool_fraction)
    base = _cluster_config(args.cluster_file) if args.cluster_file else pool_config(pool)
    if args.trace:
        try:
            trace = read_trace(args.trace)
        except TraceError as err:
            print(f"simulate: {err}", file=sys.stderr)
            return 2
        works, horizon = list(trace.works), trace.duration_s
        source = f"trace {args.trace}"
    else:
        works = workload.synthetic(args.seed, args.hours,
                                   workload.Mix(scale=args.pool_fraction))
        horizon = args.hours * 3600.0
        source = f"synthetic demand, seed {args.seed}"
    if args.write_trace:
        write_trace(args.write_trace, works, duration_s=horizon, source=source)
        print(f"wrote {len(works)} records to {args.write_trace}")
        return 0
    machines = sum(len(t.ips) for t in base.node_types)
    print(f"{source}: {len(works):,} records, {sum(w.units for w in works):,} units of work, "
          f"{horizon / 3600:g} h; pool of {machines:,} machines "
          f"({', '.join(f'{t.name} {len(t.ips)}' for t in base.node_types)})", flush=True)

    started = time.monotonic()
    reference = Simulation(base, works, label="all machines always on", horizon_s=horizon,
                           all_on=True, seed=args.seed).run()
    oracle_h = sum(reference.oracle_machine_seconds.values()) / 3600.0
    print(f"  references: {time.monotonic() - started:.1f} s", flush=True)
    runs = [(config, works, horizon, args.interval, args.seed)
            for config in settings(base, args.idle, args.speed, args.launches)]
    cpu = time.process_time()
    results = []
    with contextlib.ExitStack() as stack:
        if args.jobs > 1:
            pool = stack.enter_context(concurrent.futures.ProcessPoolExecutor(args.jobs))
            done = pool.map(_simulate, runs)
        else:
            done = map(_simulate, runs)
        for result, seconds in done:
            results.append(result)
            cpu += seconds
            print(f"  {result.label}: {seconds:.1f} s of CPU, {result.decide_calls:,} "
                  f"decisions of {result.ticks:,} intervals", flush=True)
    elapsed = time.monotonic() - started

    ref = row(reference)
    rows = [ref, {**ref, "setting": "oracle lower bound", "machine_h": oracle_h}]
    rows += [row(r) for r in results]
    text = table(rows)
    print()
    print(text)
    unserved = [(r["setting"], r["unserved"]) for r in rows if r["unserved"]]
    notes = [f"Waits count every task and actor, and each placement group once; "
             f"{sum(w.units for w in works):,} units.",
             "Work still waiting at the end counts with its wait so far"
             + (": " + ", ".join(f"{s} {u:,}" for s, u in unserved) if unserved else
                " (none was)") + ".",
             f"Simulated in {elapsed:.0f} s ({cpu:.0f} s of CPU in all)."]
    print("\n".join(notes))
    if args.out:
        out = Path(args.out)
        for path in plots(out, reference, results, oracle_h, args.focus):
            print(f"wrote {path}")
        (out / "table.md").write_text(text + "\n\n" + "\n".join(notes) + "\n",
                                      encoding="utf-8")
        print(f"wrote {out / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
