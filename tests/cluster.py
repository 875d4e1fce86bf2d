"""A Ray cluster on the local test pool, driven by the collection's playbooks: the helpers the
playbook tests and the end-to-end tests share."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.pool import pool as pools
from tests.pool.wheelhouse import REPO_ROOT

UNIT = "onprem-ray.service"
AGENT_UNIT = "onprem-ray-agent.service"
AGENT_STATE_DIR = "/var/lib/onprem-ray/agent"
AUTH_FILE = "/etc/ray/auth_token"
GCS_PORT = 6379
RAY_ENV = ["sudo", "-u", "ray", "env", "RAY_AUTH_MODE=token", f"RAY_AUTH_TOKEN_PATH={AUTH_FILE}"]
# Ray's view of the cluster, asked from the head's GCS (no ray.init()).
NODES_SCRIPT = """
import json, sys
from ray._raylet import GcsClient
from ray.core.generated import gcs_pb2
nodes = GcsClient(address=sys.argv[1]).get_all_node_info(timeout=10).values()
print(json.dumps([{"ip": n.node_manager_address, "head": n.is_head_node,
                   "resources": {k: v for k, v in n.resources_total.items()
                                 if not k.startswith("node:")}}
                  for n in nodes if n.state == gcs_pb2.GcsNodeInfo.ALIVE]))
"""
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                   re.MULTILINE)


@dataclass
class Cluster:
    pool: pools.Pool
    wheelhouse: Path
    inventory: Path | None = None  # default: the pool's own cluster file
    extra: tuple[str, ...] = ()  # arguments every playbook run gets

    @property
    def gcs(self) -> str:
        return f"{self.pool.head.ip}:{GCS_PORT}"

    def playbook(self, name: str, *args: str, check: bool = True, timeout: float = 900,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
               "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", **(env or {})}
        argv = ["ansible-playbook", "-i", str(self.inventory or self.pool.inventory),
                f"onprem.ray.{name}",
                "-e", f"ray_wheelhouse_dir={self.wheelhouse}", *self.extra, *args]
        result = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                                timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}):\n"
                                 f"{result.stdout[-6000:]}\n{result.stderr[-3000:]}")
        return result

    def nodes(self) -> list[dict]:
        out = self.pool.ssh(self.pool.head, *RAY_ENV, "/opt/ray/venv/bin/python", "-c",
                            NODES_SCRIPT, self.gcs, timeout=60)
        return json.loads(out.stdout)

    def alive_ips(self) -> set[str]:
        return {n["ip"] for n in self.nodes()}

    def wait_alive(self, ips: set[str], timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while time.monotonic() < deadline:
            try:
                seen = self.alive_ips()
            except subprocess.SubprocessError:
                seen = set()
            if seen == ips:
                return
            time.sleep(3)
        raise AssertionError(f"ALIVE in Ray: {sorted(seen)}, expected {sorted(ips)}")

    def unit(self, machine: pools.Machine) -> dict[str, str]:
        out = self.pool.ssh(machine, "systemctl", "show", UNIT, "--property",
                            "ActiveState,UnitFileState,MainPID,ActiveEnterTimestampMonotonic")
        return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)

    @property
    def all_ips(self) -> set[str]:
        return {m.ip for m in self.pool.machines}


def stop_workers(pool: pools.Pool) -> None:
    """No worker runs Ray: what an earlier module left running would be the agent's to retire
    (or count against max_workers) in the next."""
    for machine in pool.workers:
        pool.ssh(machine, "sudo", "systemctl", "disable", "--now", UNIT, check=False)


def forget_agent(pool: pools.Pool) -> None:
    """The head's agent stopped and its state store removed: the next agent remembers nothing
    of earlier modules (their failed adds and backoffs are theirs)."""
    pool.ssh(pool.head, "sudo", "systemctl", "stop", AGENT_UNIT, check=False)
    pool.ssh(pool.head, "sudo", "rm", "-f", *(f"{AGENT_STATE_DIR}/state.db{end}"
                                              for end in ("", "-wal", "-shm")), check=False)


def recap(output: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP's counts by host; an output without one is an error, so that a check of
    every host's counts cannot pass on an empty parse."""
    if not RECAP.search(output):
        raise AssertionError(f"no PLAY RECAP in the playbook's output:\n{output[-3000:]}")
    return {host: {"ok": int(ok), "changed": int(changed), "unreachable": int(unreachable),
                   "failed": int(failed)}
            for host, ok, changed, unreachable, failed in RECAP.findall(output)}
