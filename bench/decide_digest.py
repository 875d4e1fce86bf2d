"""Digests of decide()'s answers on the generated cases of bench/decide.py, to show that a
change made for speed leaves every decision as it was.

Prints one line per case and seed: a digest of the whole `Decision`, and a digest of the
placement behind it (each simulated node: what it hosts, for which demand). Run it on two
checkouts and compare the output (`diff`); `--root` names the checkout to import from.

    .venv/bin/python bench/decide_digest.py > after.txt
    .venv/bin/python bench/decide_digest.py --root ../other-checkout > before.txt
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
from pathlib import Path


def _import_from(root: Path):
    agent = root / "agent"
    sys.path[:0] = [str(agent), str(agent / "tests"), str(root / ".cache" / "collections")]
    sys.path.insert(0, str(root / "bench"))
    import decide as bench  # bench/decide.py of that checkout

    import onprem_ray_agent.policy as policy
    from onprem_ray_agent.packing import Placer

    return bench, policy, Placer


def _variants(bench, seed: int):
    """The cases of bench/decide.py, then the same situations under launch limits, caps and
    request_resources(), which take other paths through the planner."""
    yield bench.scenario("small", 100, 1_000, placement_groups=10, seed=seed)
    yield bench.scenario("medium", 200, 2_000, placement_groups=20, seed=seed)
    yield bench.scenario("target", 1_000, 10_000, seed=seed)
    yield bench.scenario("target, distinct", 1_000, 10_000, seed=seed, distinct_shapes=True)
    yield bench.scenario("target, labels", 1_000, 10_000, seed=seed, labels=True)
    for labels in (False, True):
        base = bench.scenario(f"medium, limits, labels={labels}", 200, 2_000,
                              placement_groups=20, seed=seed, labels=labels)
        types = tuple(dataclasses.replace(t, max_workers=28 + i, min_workers=20 + i)
                      for i, t in enumerate(base.config.node_types))
        config = dataclasses.replace(base.config, node_types=types, upscaling_speed=0.5,
                                     max_concurrent_launches=17, max_workers=140)
        yield dataclasses.replace(base, config=config)
        tight = dataclasses.replace(config, upscaling_speed=1e9, max_concurrent_launches=10**9,
                                    node_types=tuple(dataclasses.replace(t, min_workers=0)
                                                     for t in types))
        yield dataclasses.replace(base, name=f"medium, caps, labels={labels}", config=tight)
        constraints = tuple(bench.BundleDemand(b.resources, b.count * 5, b.label_selectors)
                            for b in base.snapshot.pending[::3])
        snapshot = dataclasses.replace(base.snapshot, constraints=constraints)
        yield dataclasses.replace(base, name=f"medium, request_resources, labels={labels}",
                                  snapshot=snapshot)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    bench, policy, Placer = _import_from(args.root.resolve())

    # Every node that takes a fill: what it takes, in order (new nodes get their address
    # when launched, after placement).
    hosted: dict = {}
    host = Placer._host

    def recording_host(self, node, total, requests, result, *rest):
        hosted.setdefault(node, []).extend(
            (str(requests[index].why), count) for index, count in result.counts)
        host(self, node, total, requests, result, *rest)

    Placer._host = recording_host
    for seed in range(1, args.seeds + 1):
        for case in _variants(bench, seed):
            hosted.clear()
            decision = policy.decide(case.config, case.machines, case.snapshot, bench.NOW)
            placed = sorted((node.ip or "", node.kind, node.node_type or "", took)
                            for node, took in hosted.items())
            whole = hashlib.sha256(repr(decision).encode()).hexdigest()[:16]
            where = hashlib.sha256(repr(placed).encode()).hexdigest()[:16]
            adds = len(decision.ips_of(bench.ActionKind.ADD))
            print(f"seed {seed} {case.name:<40} decision {whole} placement {where} "
                  f"adds {adds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
