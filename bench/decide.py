"""Benchmark of the agent's decision function, `onprem_ray_agent.policy.decide`.

Prints a table: the median time of `decide` over several runs on a generated pool (machines in
every lifecycle state, Ray nodes with partly used resources, pending tasks/actors grouped by
shape, placement groups of every strategy), and beside it Ray 2.60's own autoscaler v2
scheduler (`ray.autoscaler.v2.scheduler.ResourceDemandScheduler.schedule`) on the equivalent
request, measured in the same run. The target is decide() under 50 ms for 1,000 machines x
10,000 pending bundles x 5 node types.

    .venv/bin/python bench/decide.py                 # the default table
    .venv/bin/python bench/decide.py --runs 9 --peer-runs 3
    .venv/bin/python bench/decide.py --no-peer       # decide() only

"Planned" is how many machines each planner would add (launch limits lifted on both sides), a
check that the two solve the same problem; both score nodes by Ray's utilization score, but
decide() scores only the fullest few of the nodes there are for each placement (see
agent/onprem_ray_agent/packing.py), so on large clusters the two may differ a little.

The label-heavy case gives every node type labels (a zone and a tier) and half the pending
bundles and placement group bundles a label selector (`in`, `not in`, with fallbacks).

Ray's scheduler grows about quadratically with the cluster (it copies every node for every
placement decision): it is timed in full on the smaller cases, and at the target size given one
attempt of --peer-timeout-s; when that runs out the table shows a lower bound ("> ...").
"""

from __future__ import annotations

import argparse
import random
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

AGENT = Path(__file__).resolve().parent.parent / "agent"
sys.path[:0] = [str(AGENT), str(AGENT / "tests"),
                # the collection onprem.ray, whose model the agent imports (make setup links it)
                str(AGENT.parent / ".cache" / "collections")]

from onprem_ray_agent.model import (  # noqa: E402
    ActionKind,
    BundleDemand,
    Config,
    DemandSnapshot,
    LabelConstraint,
    LabelOperator,
    LabelSelector,
    Machine,
    MachineState,
    NodeType,
    PlacementGroupDemand,
    PlacementStrategy,
    RayNode,
)
from onprem_ray_agent.policy import decide  # noqa: E402

GB = 1024**3
NODE_TYPES = [
    ("cpu4", {"CPU": 4, "memory": 16 * GB}),
    ("cpu16", {"CPU": 16, "memory": 64 * GB}),
    ("highmem", {"CPU": 8, "memory": 256 * GB}),
    ("gpu1", {"CPU": 8, "GPU": 1, "memory": 64 * GB}),
    ("gpu4", {"CPU": 32, "GPU": 4, "memory": 256 * GB}),
]
TASK_SHAPES = [
    {"CPU": 1}, {"CPU": 2}, {"CPU": 0.5}, {"CPU": 4}, {"CPU": 8}, {"CPU": 0.25},
    {"CPU": 1, "GPU": 1}, {"GPU": 1}, {"GPU": 0.5}, {"CPU": 8, "GPU": 4}, {"CPU": 2, "GPU": 1},
    {"CPU": 1, "memory": 2 * GB}, {"CPU": 4, "memory": 32 * GB}, {"CPU": 2, "memory": 8 * GB},
    {"CPU": 1, "memory": 100 * GB}, {"CPU": 16, "memory": 48 * GB}, {"CPU": 3}, {"CPU": 6},
    {"CPU": 12}, {"CPU": 1, "GPU": 0.25}, {"CPU": 0.1}, {"CPU": 2, "memory": 1 * GB},
    {"CPU": 4, "GPU": 2}, {"CPU": 1.5},
]
PG_BUNDLES = [{"CPU": 1}, {"CPU": 2}, {"CPU": 2, "GPU": 1}, {"CPU": 4, "memory": 8 * GB}]
STATES = [(MachineState.ACTIVE, 0.5), (MachineState.JOINING, 0.1), (MachineState.SPARE, 0.3),
          (MachineState.FAILED, 0.05), (MachineState.QUARANTINED, 0.05)]
ZONES = ["a", "b", "c", "d"]
TIERS = ["general", "fast"]
HEAD = "10.255.0.1"


def _selectors(rng: random.Random) -> tuple[LabelSelector, ...]:
    """Half none; else a zone in/not in, sometimes a tier, sometimes a fallback."""
    if rng.random() < 0.5:
        return ()
    first = [LabelConstraint("zone", rng.choice(list(LabelOperator)),
                             tuple(sorted(rng.sample(ZONES, rng.randint(1, 2)))))]
    if rng.random() < 0.3:
        first.append(LabelConstraint("tier", LabelOperator.IN, (rng.choice(TIERS),)))
    selectors = [LabelSelector(tuple(first))]
    if rng.random() < 0.2:
        selectors.append(LabelSelector((LabelConstraint("tier", LabelOperator.IN,
                                                        (rng.choice(TIERS),)),)))
    return tuple(selectors)
NOW = 1_700_000_000.0


@dataclass
class Scenario:
    name: str
    config: Config
    machines: list[Machine]
    snapshot: DemandSnapshot


def scenario(name: str, machines: int, bundles: int, types: int = 5, seed: int = 1,
             placement_groups: int = 100, distinct_shapes: bool = False,
             labels: bool = False) -> Scenario:
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    per_type = machines // types
    node_types, records, nodes = [], [], [RayNode(ip=HEAD, total={}, available={})]
    for t, (type_name, resources) in enumerate(NODE_TYPES[:types]):
        ips = tuple(f"10.{t}.{i // 250}.{i % 250 + 1}" for i in range(per_type))
        type_labels = ({"zone": ZONES[t % len(ZONES)], "tier": TIERS[t % len(TIERS)]}
                       if labels else {})
        node_types.append(NodeType(type_name, ips, resources, labels=type_labels))
        for ip in ips:
            state = rng.choices([s for s, _ in STATES], [w for _, w in STATES])[0]
            records.append(Machine(ip=ip, node_type=type_name, state=state, since=NOW - 60,
                                   failures=2 if state == MachineState.FAILED else 0,
                                   next_attempt_at=NOW + 60, success_count=rng.randint(0, 3)))
            if state == MachineState.ACTIVE:
                free = {key: (float(rng.randint(0, int(value))) if key != "memory"
                              else rng.random() * value) for key, value in resources.items()}
                nodes.append(RayNode(ip=ip, total=resources, available=free,
                                     idle_s=rng.choice([0.0, 0.0, 30.0, 400.0]),
                                     labels=type_labels))
    pg_bundles = 4 * placement_groups
    task_bundles = bundles - pg_bundles
    if distinct_shapes:
        pending = tuple(BundleDemand({"CPU": 1 + i / 10_000}, 1) for i in range(task_bundles))
    else:
        counts = [0] * len(TASK_SHAPES)
        for _ in range(task_bundles):
            counts[rng.randrange(len(TASK_SHAPES))] += 1
        pending = tuple(BundleDemand(shape, count, _selectors(rng) if labels else ())
                        for shape, count in zip(TASK_SHAPES, counts, strict=True) if count)
        if labels:  # the same shapes again, with other selectors
            pending += tuple(BundleDemand(shape, max(1, count // 3), _selectors(rng))
                             for shape, count in zip(TASK_SHAPES, counts, strict=True)
                             if count)
    strategies = list(PlacementStrategy)
    groups = tuple(PlacementGroupDemand(
        id=f"pg{i:04d}", strategy=strategies[i % 4],
        bundles=tuple(rng.choice(PG_BUNDLES) for _ in range(4)),
        bundle_selectors=tuple(_selectors(rng) for _ in range(4)) if labels else ())
        for i in range(placement_groups))
    config = Config(head_ip=HEAD, node_types=tuple(node_types), upscaling_speed=1e9,
                    max_concurrent_launches=10**9, idle_timeout_minutes=5)
    return Scenario(name, config, records,
                    DemandSnapshot(pending=pending, placement_groups=groups, nodes=tuple(nodes)))


def planned_by_decide(s: Scenario) -> int:
    decision = decide(s.config, s.machines, s.snapshot, NOW)
    return len(decision.ips_of(ActionKind.ADD))


# ---------------------------------------------------------------- Ray's scheduler as the peer


def ray_request(s: Scenario):
    """The same situation as Ray v2's scheduler sees it (agent/tests/ray_reference.py):
    active machines are RAY_RUNNING instances, joining ones ALLOCATED; each type may grow by
    its spare machines; labels and label selectors as Ray carries them."""
    from ray_reference import scheduling_request

    return scheduling_request(s.config, s.machines, s.snapshot)


def planned_by_ray(request) -> int:
    from ray.autoscaler.v2.scheduler import ResourceDemandScheduler

    reply = ResourceDemandScheduler().schedule(request)
    return sum(launch.count for launch in reply.to_launch)


# ---------------------------------------------------------------- timing


class _OutOfTime(Exception):
    pass


def _out_of_time(signum, frame):
    raise _OutOfTime


def timed(function, runs: int, limit_s: float | None = None
          ) -> tuple[float, float, int, object] | None:
    """Median and max in ms over `runs` calls; None if a call outlives `limit_s`."""
    times, result = [], None
    for _ in range(runs):
        if limit_s:
            signal.signal(signal.SIGALRM, _out_of_time)
            signal.setitimer(signal.ITIMER_REAL, limit_s)
        started = time.perf_counter()
        try:
            result = function()
        except _OutOfTime:
            return None
        finally:
            if limit_s:
                signal.setitimer(signal.ITIMER_REAL, 0)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000, max(times) * 1000, len(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of decide() per case (>= 5)")
    parser.add_argument("--peer-runs", type=int, default=3,
                        help="runs of Ray's scheduler on the smaller cases")
    parser.add_argument("--peer-timeout-s", type=float, default=60.0,
                        help="the one attempt of Ray's scheduler at the target size")
    parser.add_argument("--no-peer", action="store_true", help="skip Ray's scheduler")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    runs = max(args.runs, 5)

    # (case, peer runs and time limit)
    cases = [
        (scenario("small", 100, 1_000, placement_groups=10, seed=args.seed),
         args.peer_runs, None),
        (scenario("medium", 200, 2_000, placement_groups=20, seed=args.seed),
         args.peer_runs, None),
        (scenario("target", 1_000, 10_000, seed=args.seed), 1, args.peer_timeout_s),
        (scenario("target, every bundle its own shape", 1_000, 10_000, seed=args.seed,
                  distinct_shapes=True), 1, args.peer_timeout_s),
        (scenario("target, label-heavy", 1_000, 10_000, seed=args.seed, labels=True),
         1, args.peer_timeout_s),
    ]
    header = (f"{'case':<36} {'machines':>8} {'bundles':>8} {'types':>5} "
              f"{'decide ms':>10} {'(max)':>7} {'Ray v2 ms':>10} {'(runs)':>6} "
              f"{'Ray/decide':>10} {'planned':>8} {'Ray planned':>11}")
    print(f"Python {sys.version.split()[0]}; decide(): median of {runs} runs; peer: Ray "
          f"2.60's ResourceDemandScheduler.schedule, same process, same input", flush=True)
    print(header)
    print("-" * len(header), flush=True)
    target_ms: dict[str, tuple[float, int]] = {}
    for case, peer_runs, limit_s in cases:
        bundles = (sum(b.count for b in case.snapshot.pending)
                   + sum(len(g.bundles) for g in case.snapshot.placement_groups))
        median, longest, _, _ = timed(
            lambda c=case: decide(c.config, c.machines, c.snapshot, NOW), runs)
        if case.name.startswith("target"):
            target_ms[case.name] = (median, bundles)
        planned = planned_by_decide(case)
        ray_ms = ray_runs = ray_planned = ratio = "-"
        if not args.no_peer:
            request = ray_request(case)
            peer = timed(lambda r=request: planned_by_ray(r), peer_runs, limit_s)
            if peer is None:
                ray_ms, ray_runs, ray_planned = f"> {limit_s * 1000:.0f}", "1", "?"
                ratio = f"> {limit_s * 1000 / median:.0f}x"
            else:
                peer_median, _, count, result = peer
                ray_ms, ray_runs, ray_planned = f"{peer_median:.0f}", str(count), str(result)
                ratio = f"{peer_median / median:.0f}x"
        print(f"{case.name:<36} {len(case.machines):>8} {bundles:>8} "
              f"{len(case.config.node_types):>5} {median:>10.1f} {longest:>7.1f} "
              f"{ray_ms:>10} {ray_runs:>6} {ratio:>10} {planned:>8} {ray_planned:>11}",
              flush=True)
    print()
    for name, (median, bundles) in target_ms.items():
        verdict = "under" if median <= 50 else "OVER"
        print(f"decide(), {name} (1,000 machines x {bundles:,} bundles x 5 types): "
              f"{median:.1f} ms median, {verdict} the 50 ms bar")
    return 0


if __name__ == "__main__":
    sys.exit(main())
