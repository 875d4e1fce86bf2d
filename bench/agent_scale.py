"""The agent's own cost with 1,000 and 10,000 machines: one iteration of the loop, `status`,
the state store, and the process's memory. Prints a table; asserts nothing.

    .venv/bin/python bench/agent_scale.py                  # 1,000 and 10,000 machines
    .venv/bin/python bench/agent_scale.py --sizes 1000 --iterations 5

Each size runs in a process of its own (so that its memory is its own): the real loop
(`loop.Agent.iterate`), the real SQLite state store, the real metrics, a fake Ray and a fake
playbook runner. The pool has 3 node types (80 % CPU, 15 % large-memory, 5 % GPU machines); half
the machines run Ray and are busy, a tenth are idle past the idle timeout, 1 % more fall idle
before each iteration, and more bundles are pending than the busy machines have room for,
so every iteration adds machines, retires others, and records runs that ended: the runner
ends each run by the next iteration and Ray lists (or drops) its machines.

Columns: the first iteration (every machine admitted into an empty store); a steady
iteration (median and min-max of --iterations), in wall-clock and in the process's CPU time
(which a busy machine inflates less); writing status.json and the demand history
after an iteration, as the service does; `status` (reading the store and rendering the text);
resident memory after the iterations and its peak. Targets: an iteration under 100 ms at 1,000
machines and under 1 s at 10,000; resident memory under 200 MB.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import MappingProxyType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "agent"))
sys.path.insert(0, str(ROOT / ".cache" / "collections"))  # onprem.ray, which the agent imports

from onprem_ray_agent.adapters.runner import OK, RunResult  # noqa: E402
from onprem_ray_agent.history import HistoryRecorder  # noqa: E402
from onprem_ray_agent.loop import Agent  # noqa: E402
from onprem_ray_agent.metrics import AgentMetrics  # noqa: E402
from onprem_ray_agent.model import (  # noqa: E402
    BundleDemand,
    Config,
    DemandSnapshot,
    NodeType,
    PlacementGroupDemand,
    PlacementStrategy,
    RayNode,
    RayNodeState,
)
from onprem_ray_agent.status import collect_status, render, write_status_file  # noqa: E402

HEAD = "10.255.255.1"
GIB = 1024**3
TYPES = (("cpu", 0.80, {"CPU": 32.0, "memory": 128.0 * GIB}),
         ("highmem", 0.15, {"CPU": 32.0, "memory": 1024.0 * GIB}),
         ("gpu", 0.05, {"CPU": 32.0, "GPU": 8.0, "memory": 512.0 * GIB}))
INTERVAL_S = 5.0
IDLE_TIMEOUT_MIN = 5.0


def _frozen(values: dict) -> MappingProxyType:
    return MappingProxyType(dict(values))


def _node(ip: str, total: dict, busy: bool, idle_s: float) -> RayNode:
    free = {k: (v / 4 if busy else v) for k, v in total.items()}
    return RayNode(ip=ip, state=RayNodeState.ALIVE, node_id=f"id-{ip}", is_head=ip == HEAD,
                   total=_frozen(total), available=_frozen(free), idle_s=idle_s)


class FakeRay:
    """Ray's GCS: a head, the workers alive (busy or idle), pending bundles and groups."""

    def __init__(self, resources: dict[str, dict], machines: int) -> None:
        self.resources = resources  # ip -> a machine's resources
        self.nodes = {HEAD: _node(HEAD, {}, False, 0.0)}
        # more than the busy machines' free room: every iteration adds machines
        bundles = [({"CPU": 1.0}, 5 * machines), ({"CPU": 4.0, "memory": 200.0 * GIB},
                                                   machines // 5),
                   ({"CPU": 4.0, "GPU": 1.0}, machines // 10)]
        self.pending = tuple(BundleDemand(_frozen(shape), count) for shape, count in bundles)
        self.groups = tuple(PlacementGroupDemand(
            f"pg{i}", PlacementStrategy.STRICT_SPREAD, (_frozen({"GPU": 8.0}),) * 2)
            for i in range(5))

    def alive(self, ip: str, busy: bool, idle_s: float = 0.0) -> None:
        self.nodes[ip] = _node(ip, self.resources[ip], busy, idle_s)

    def snapshot(self) -> DemandSnapshot:
        return DemandSnapshot(pending=self.pending, placement_groups=self.groups,
                              nodes=tuple(self.nodes.values()))


class FakeRunner:
    """Runs nothing: a run ends at the next poll; an add's machines then run Ray (busy), a
    retire's leave Ray."""

    def __init__(self, pool: frozenset[str], ray: FakeRay) -> None:
        self.pool = pool
        self.ray = ray
        self._running: dict[str, tuple[str, tuple[str, ...]]] = {}

    def start(self, request_id, playbook, ips, extravars=None, timeout_s=None) -> None:
        self._running[request_id] = (playbook, tuple(ips))

    def poll(self) -> list[RunResult]:
        done = []
        for request_id, (playbook, ips) in self._running.items():
            for ip in ips:
                if playbook.endswith("add_workers"):
                    self.ray.alive(ip, busy=True)
                else:
                    self.ray.nodes.pop(ip, None)
            done.append(RunResult(request_id=request_id, playbook=playbook, ips=ips,
                                  status="successful", rc=0, hosts=dict.fromkeys(ips, OK),
                                  duration_s=1.0))
        self._running.clear()
        return done

    def running(self) -> list[str]:
        return sorted(self._running)

    def recorded(self, request_id):
        return None

    def reach(self, address, node_type) -> bool:
        return address in self.pool


def _memory_mb() -> tuple[float, float]:
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def measure(machines: int, iterations: int) -> dict:
    node_types, resources = [], {}
    first = 0
    for t, (name, share, total) in enumerate(TYPES):
        count = round(machines * share)
        ips = tuple(f"10.{t}.{i // 250}.{i % 250 + 1}" for i in range(count))
        node_types.append(NodeType(name, ips, total))
        resources.update(dict.fromkeys(ips, total))
        first += count
    config = Config(head_ip=HEAD, node_types=tuple(node_types),
                    idle_timeout_minutes=IDLE_TIMEOUT_MIN, upscaling_speed=1.0)
    ray = FakeRay(resources, machines)
    pool = frozenset(resources)
    ordered = sorted(pool)
    with tempfile.TemporaryDirectory() as scratch:
        state_dir = Path(scratch)
        from onprem_ray_agent.store import StateStore

        store = StateStore.open(state_dir / "state.db")
        runner = FakeRunner(pool, ray)
        agent = Agent(config, store, ray, runner, metrics=AgentMetrics())
        history = HistoryRecorder(state_dir, HEAD)
        # Half the machines already run Ray, busy; a tenth idle past the timeout.
        for i, ip in enumerate(ordered):
            if i % 2 == 0:
                ray.alive(ip, busy=True)
            elif i % 10 == 1:
                ray.alive(ip, busy=False, idle_s=IDLE_TIMEOUT_MIN * 60 + 30)
        now = 1_700_000_000.0
        started = time.perf_counter()
        agent.iterate(now)  # admits every machine, adopts the running ones
        first_s = time.perf_counter() - started
        steady, steady_cpu, record, acted = [], [], [], 0
        busy = [ip for ip in ordered if ip in ray.nodes and ray.nodes[ip].idle_s == 0.0]
        for _ in range(iterations):
            # 1 % of the busy machines fall idle past the timeout: retires in every iteration
            for ip in busy[:len(busy) // 100]:
                if ip in ray.nodes:
                    ray.alive(ip, busy=False, idle_s=IDLE_TIMEOUT_MIN * 60 + 30)
            busy = busy[len(busy) // 100:]
            now += INTERVAL_S
            started, cpu = time.perf_counter(), time.process_time()
            report = agent.iterate(now)
            steady.append(time.perf_counter() - started)
            steady_cpu.append(time.process_time() - cpu)
            acted += sum(len(a.ips) for a in report.acted)
            started = time.perf_counter()
            write_status_file(state_dir, report, cluster_file="cluster.yml",
                              gcs_address="127.0.0.1:6379")
            history.record(report.now, report.demand)
            record.append(time.perf_counter() - started)
        renders = []
        for _ in range(3):
            started = time.perf_counter()
            text = render(collect_status(store, state_dir, report), now)
            renders.append(time.perf_counter() - started)
        states = {}
        for machine in store.machines().values():
            states[machine.state.value] = states.get(machine.state.value, 0) + 1
        store.close()
    rss, peak = _memory_mb()
    return {"machines": machines, "first_ms": _ms(first_s),
            "iter_ms": [_ms(s) for s in steady], "iter_cpu_ms": [_ms(s) for s in steady_cpu],
            "record_ms": [_ms(s) for s in record],
            "status_ms": [_ms(s) for s in renders], "status_lines": text.count("\n"),
            "rss_mb": rss, "peak_mb": peak, "acted_per_iteration": acted / iterations,
            "states": states}


def _cell(values: list[float]) -> str:
    return (f"{statistics.median(values):,.1f} ({min(values):,.1f}-{max(values):,.1f})"
            if len(values) > 1 else f"{values[0]:,.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--iterations", type=int, default=7)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.iterations)))
        return 0
    rows = []
    for size in args.sizes:
        done = subprocess.run([sys.executable, __file__, "--child", str(size), "--iterations",
                               str(args.iterations)], capture_output=True, text=True,
                              check=False)
        if done.returncode:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        rows.append(json.loads(done.stdout))
    print(f"median (min-max) of {args.iterations} iterations, ms; memory in MB")
    print("| machines | first iteration | iteration | iteration, CPU time | "
          "status.json + history | status | RSS | peak RSS | machines acted on per iteration |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['machines']:,} | {r['first_ms']:,.0f} | {_cell(r['iter_ms'])} | "
              f"{_cell(r['iter_cpu_ms'])} | "
              f"{_cell(r['record_ms'])} | {_cell(r['status_ms'])} | {r['rss_mb']:.0f} | "
              f"{r['peak_mb']:.0f} | {r['acted_per_iteration']:.0f} |")
    for r in rows:
        print(f"{r['machines']:,} machines at the end: "
              + ", ".join(f"{k} {v}" for k, v in sorted(r["states"].items()))
              + f"; status text {r['status_lines']:,} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
