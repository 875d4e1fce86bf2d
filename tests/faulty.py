"""The fault tests' view of a prepared pool (bench/chaos.py's `Chaos`): the agent's records and
runs, Ray's nodes, named detached actors as load (restarted by Ray when their node dies), and
the checks of tests/faults.py once the pool settled."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests import faults
from tests.pool import pool as pools

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import chaos

HEAD_CLUSTER_FILE = "/etc/onprem-ray/cluster.yml"
UNIT = "onprem-ray-agent.service"
NAMESPACE = "faults"
# A detached actor per name, of `cpus` CPUs, with a label selector (JSON, {} for none); Ray
# restarts it elsewhere when its node dies.
CREATE = f"""
import json, sys, ray
ray.init(address=sys.argv[1], namespace={NAMESPACE!r}, logging_level="ERROR")
@ray.remote
class Load:
    def where(self):
        return ray.util.get_node_ip_address()
cpus, selector = float(sys.argv[2]), json.loads(sys.argv[3])
for name in sys.argv[4:]:
    Load.options(name=name, lifetime="detached", num_cpus=cpus, max_restarts=-1,
                 max_task_retries=-1, get_if_exists=True,
                 **({{"label_selector": selector}} if selector else {{}})).remote()
"""
# Where each named actor runs (JSON), once all answer within the timeout; else an error.
PLACED = f"""
import json, sys, ray
ray.init(address=sys.argv[1], namespace={NAMESPACE!r}, logging_level="ERROR")
actors = [ray.get_actor(name) for name in sys.argv[3:]]
print(json.dumps(ray.get([a.where.remote() for a in actors], timeout=float(sys.argv[2]))))
"""
KILL = f"""
import sys, ray
ray.init(address=sys.argv[1], namespace={NAMESPACE!r}, logging_level="ERROR")
for name in sys.argv[2:]:
    try:
        ray.kill(ray.get_actor(name), no_restart=True)
    except ValueError:
        pass
"""
# Every node Ray has seen at an address, oldest first: its id, state and how it ended.
NODES_AT = """
import json, sys
from ray._raylet import GcsClient
from ray.core.generated import common_pb2, gcs_pb2
nodes = GcsClient(address=sys.argv[1]).get_all_node_info(timeout=10).values()
print(json.dumps([{"id": n.node_id.hex(), "state": gcs_pb2.GcsNodeInfo.GcsNodeState.Name(n.state),
                   "start_ms": n.start_time_ms, "end_ms": n.end_time_ms,
                   "reason": common_pb2.NodeDeathInfo.Reason.Name(n.death_info.reason)}
                  for n in sorted(nodes, key=lambda n: n.start_time_ms)
                  if n.node_manager_address == sys.argv[2]]))
"""


@dataclass
class Faulty:
    """The prepared pool (bench/chaos.py's `Chaos`) with what the fault tests need."""

    chaos: chaos.Chaos
    worker_cpus: float = 2.0
    fast: list[str] = field(default_factory=list)  # test_worker_faults' node types
    slow: str = ""

    @property
    def pool(self) -> pools.Pool:
        return self.chaos.pool

    def machine(self, ip: str) -> pools.Machine:
        return next(m for m in self.pool.workers if m.ip == ip)

    def ssh(self, *remote: str, timeout: float = 120, stdin: str | None = None) -> str:
        result = subprocess.run(self.pool.ssh_command(self.pool.head, *remote), input=stdin,
                                text=True, capture_output=True, timeout=timeout, check=False)
        assert result.returncode == 0, f"{remote[:3]}: {result.stdout[-2000:]}{result.stderr}"
        return result.stdout

    def ray(self, script: str, *args: str, timeout: float = 180) -> str:
        result = self.chaos.ray(script, *args, timeout=timeout)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    def create(self, *names: str, selector: dict[str, str] | None = None) -> None:
        self.ray(CREATE, str(self.worker_cpus), json.dumps(selector or {}), *names)

    def placed(self, *names: str, timeout: float = 240) -> list[str]:
        return json.loads(self.ray(PLACED, str(timeout), *names, timeout=timeout + 120))

    def kill_actors(self, *names: str) -> None:
        self.ray(KILL, *names)

    def nodes_at(self, ip: str) -> list[dict[str, Any]]:
        return json.loads(self.ray(NODES_AT, ip))

    def status(self) -> dict[str, Any]:
        status, error = self.chaos.status()
        assert status is not None, error
        return status

    def record(self, ip: str) -> dict[str, Any]:
        return next(m for m in self.status()["machines"] if m["ip"] == ip)

    def states(self) -> dict[str, str]:
        return {m["ip"]: m["state"] for m in self.status()["machines"]}

    def add_runs(self) -> list[dict[str, Any]]:
        return [r for r in self.status()["running"] if r["kind"] == "add"]

    def outcome(self, request_id: str) -> str:
        """How a run ended ('' while it runs)."""
        runs = self.status()["recent_runs"]
        return next((r["outcome"] for r in runs if r["request_id"] == request_id), "")

    def now(self) -> float:
        return float(self.ssh("date", "+%s"))

    def journal(self, since: float) -> str:
        return self.chaos.journal_since(since)

    def alive(self) -> set[str]:
        return faults.alive_workers(self.chaos.nodes(), self.chaos.head_ip)

    def wait(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(1)
        log = self.journal(time.time() - 300)[-5000:]
        raise AssertionError(f"not within {timeout:.0f} s: {what}\nagent states: "
                             f"{self.states()}\nagent log:\n{log}")

    def set_setup_commands(self, node_type: str, commands: list[str] | None) -> None:
        """Give a node type of the head's cluster file its own worker_setup_commands (None:
        none of its own), then SIGHUP the agent and wait until it read the file again."""
        data = yaml.safe_load(self.ssh("cat", HEAD_CLUSTER_FILE))
        types = data["available_node_types"]
        types[node_type].pop("worker_setup_commands", None)
        if commands is not None:
            types[node_type]["worker_setup_commands"] = commands
        since = self.now()
        self.ssh("sudo", "tee", HEAD_CLUSTER_FILE, stdin=yaml.safe_dump(data, sort_keys=False))
        self.ssh("sudo", "systemctl", "reload", UNIT)
        self.wait("the agent read its cluster file again",
                  lambda: "SIGHUP: cluster file" in self.journal(since), timeout=60)

    def nothing_lost(self, *actors: str, timeout: float = 240) -> faults.Report:
        """Once the pool settled (every check clean, within `timeout`): the checks, and the
        named actors (the demand) running on the cluster."""
        deadline = time.monotonic() + timeout
        while True:
            status, error = self.chaos.status()
            report = faults.check_pool(status, self.chaos.nodes(), self.chaos.inventory,
                                       self.chaos.head_ip, error)
            if report.clean or time.monotonic() >= deadline:
                break
            time.sleep(2)
        result = self.chaos.ray(PLACED, f"{max(10.0, deadline - time.monotonic()):.0f}",
                                *actors, timeout=max(10.0, deadline - time.monotonic()) + 120)
        placed = json.loads(result.stdout) if result.returncode == 0 else None
        cluster = {self.chaos.head_ip} | self.alive()
        return report.merge(faults.check_demand(len(actors), placed, cluster,
                                                result.stderr[-500:]))

    def assert_nothing_lost(self, *actors: str) -> None:
        report = self.nothing_lost(*actors)
        assert report.clean, (report.messages, self.status())


def ssh_established(faulty: Faulty, ip: str, timeout: float) -> None:
    """Return once the head holds an SSH connection to `ip` (a playbook's)."""
    faulty.ssh("timeout", str(timeout), "sh", "-c",
               f"until ss -Htn state established dst {ip}:22 | grep -q .; do sleep 0.2; done",
               timeout=timeout + 30)


def subprocess_quiet(argv: list[str]) -> None:
    subprocess.run(argv, capture_output=True, check=False)
