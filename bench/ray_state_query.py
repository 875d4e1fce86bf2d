"""Benchmark of the agent's question to Ray's GCS (`GcsRayState.snapshot()`): prints a table,
asserts nothing.

    python bench/ray_state_query.py [--queries 200] [--pending 0 100]

Starts a Ray 2.60 head on loopback with token authentication in its own process group (never
`ray stop`, which would stop Ray in the test pool's containers too), then, for each number of
pending detached actors asked for (they need more CPUs than the head has, so they stay
pending), times --queries snapshots. The agent asks once per iteration; its loop has room for
a query well under a second.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "agent"))
sys.path.insert(0, str(REPO_ROOT / ".cache" / "collections"))  # onprem.ray, which the agent imports

from onprem_ray_agent.adapters.ray_state import GcsRayState, RayUnavailable  # noqa: E402
from onprem_ray_agent.model import RayNodeState  # noqa: E402

RAY_BIN = Path(sys.executable).parent / "ray"
PENDING = """
import sys, ray
ray.init(address=sys.argv[1], namespace="bench", logging_level="ERROR")
@ray.remote(num_cpus=64)
class Big:
    pass
for i in range(int(sys.argv[2])):
    Big.options(name=f"big-{i}", lifetime="detached", get_if_exists=True).remote()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--pending", type=int, nargs="+", default=[0, 100])
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-ray-state-"))
    token = root / "token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = os.environ | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    port = free_port()
    address = f"127.0.0.1:{port}"
    head = subprocess.Popen(
        [str(RAY_BIN), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
         "--disable-usage-stats", f"--temp-dir={root}/t"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    rows = []
    try:
        ray = GcsRayState(address, timeout_s=5)
        deadline = time.monotonic() + 120
        while True:
            try:
                if any(node.state == RayNodeState.ALIVE for node in ray.snapshot().nodes):
                    break
            except RayUnavailable:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the Ray head did not come up within 120 s")
            time.sleep(0.5)
        for pending in args.pending:
            subprocess.run([sys.executable, "-c", PENDING, address, str(pending)], env=env,
                           check=True, capture_output=True, timeout=300)
            times, seen = [], 0
            for _ in range(args.queries):
                started = time.perf_counter()
                snapshot = ray.snapshot()
                times.append(time.perf_counter() - started)
                seen = sum(b.count for b in snapshot.pending)
            rows.append((pending, seen, statistics.median(times), percentile(times, 0.95),
                         max(times)))
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
    print(f"GcsRayState.snapshot(), {args.queries} queries per row, Ray head on loopback")
    print(f"{'pending asked':>13} {'pending seen':>12} {'median ms':>10} {'p95 ms':>8} "
          f"{'max ms':>8}")
    for pending, seen, median, p95, worst in rows:
        print(f"{pending:>13} {seen:>12} {median * 1000:>10.1f} {p95 * 1000:>8.1f} "
              f"{worst * 1000:>8.1f}")
    print(json.dumps({"rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
