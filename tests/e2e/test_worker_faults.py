"""Workers failing under the agent, end to end: real containers killed and cut off the network,
real Ray, the agent under systemd on the head. Each test states its fault and what must
happen, then ends with the checks of tests/faults.py: every machine of the pool recorded once,
in a state that agrees with Ray; none in two runs; no run left running; the store opens; the
pending actors run.

One `up` for the module (bench/chaos.py's `prepare`): the head (its CPUs held by an actor) and
3 workers of two node types, `fast` (2 machines, tier=fast) and `slow` (1, tier=slow), none
started; the agent runs every second, retires a worker idle for IDLE_S, retries a failed
machine after 5 s to 20 s and fails an add not ALIVE in Ray within PROVISION_TIMEOUT_S. The
load: detached actors of a whole worker each, restarted by Ray when their node dies
(`max_restarts=-1`). The tests run in file order, each on what the one before left.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import faults
from tests.cluster import forget_agent, stop_workers
from tests.pool import pool as pools
from tests.pool.wheelhouse import ensure_wheelhouse

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import chaos

pytestmark = [pytest.mark.pool, pytest.mark.e2e]

WORKER_CPUS = 2
IDLE_S = 10.0
PROVISION_TIMEOUT_S = 45
CUT_S = 30
SETTINGS = {**chaos.AGENT_SETTINGS, "head_agent_provision_timeout": str(PROVISION_TIMEOUT_S),
            "head_agent_quarantine_after": "3"}
HEAD_CLUSTER_FILE = "/etc/onprem-ray/cluster.yml"
STATE_DIR = "/var/lib/onprem-ray/agent"
UNIT = "onprem-ray-agent.service"
NAMESPACE = "wfaults"
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
    fast: list[str]
    slow: str

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
        self.ray(CREATE, str(WORKER_CPUS), json.dumps(selector or {}), *names)

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


@pytest.fixture(scope="module")
def faulty(pool: pools.Pool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faulty]:
    assert len(pool.workers) >= 3, "these tests need a head and 3 workers (POOL_MACHINES=4)"
    fast, slow = [m.ip for m in pool.workers[:2]], pool.workers[2].ip
    # Start from no worker running and an agent that remembers nothing of earlier modules.
    stop_workers(pool)
    forget_agent(pool)
    provider = yaml.safe_load(pool.inventory.read_text())["provider"]
    provider.pop("worker_ips", None)
    types = {"head": {"resources": {}},
             "fast": {"worker_ips": fast, "resources": {"CPU": WORKER_CPUS},
                      "labels": {"tier": "fast"}},
             "slow": {"worker_ips": [slow], "resources": {"CPU": WORKER_CPUS},
                      "labels": {"tier": "slow"}}}
    made = chaos.prepare(pool, ensure_wheelhouse(), IDLE_S, tmp_path_factory.mktemp("wfaults"),
                         settings=SETTINGS, provider=provider, head_node_type="head",
                         available_node_types=types)
    yield Faulty(chaos=made, fast=fast, slow=slow)
    for machine in pool.workers:  # a test that failed midway may leave one cut off or down
        subprocess_quiet(["docker", "start", machine.container])
        subprocess_quiet(["docker", "network", "connect", "--ip", machine.ip, pool.network,
                          machine.container])
    made.ray(KILL, "cut-add", "hung", "served", "job", "steady")
    chaos.release(made)


def subprocess_quiet(argv: list[str]) -> None:
    subprocess.run(argv, capture_output=True, check=False)


def test_a_worker_cut_off_during_an_add_past_the_provision_timeout_fails_and_another_serves(
        faulty: Faulty) -> None:
    """Fault: the machine an add is setting up is cut off the network (docker network
    disconnect) just after the playbook connected to it, for longer than provision_timeout_s.
    Expected: the add times out; the machine is failed with a reason naming
    provision_timeout_s; another spare of its type serves the demand; once reconnected, nothing
    is lost."""
    faulty.create("cut-add", selector={"tier": "fast"})
    run = faulty.wait("an add run", lambda: next(iter(faulty.add_runs()), None), timeout=120)
    assert len(run["ips"]) == 1 and run["ips"][0] in faulty.fast, run
    cut = run["ips"][0]
    ssh_established(faulty, cut, timeout=60)
    pools.disconnect(faulty.pool, faulty.machine(cut))
    try:
        faulty.wait(f"{cut} failed", lambda: faulty.record(cut)["state"] == "failed",
                    timeout=PROVISION_TIMEOUT_S + 120)
        record = faulty.record(cut)
        assert "provision_timeout_s" in record["reason"], record
        assert faulty.outcome(run["request_id"]) == "timeout"
        other = next(ip for ip in faulty.fast if ip != cut)
        assert faulty.placed("cut-add") == [other]
    finally:
        pools.connect(faulty.pool, faulty.machine(cut))
    faulty.assert_nothing_lost("cut-add")
    faulty.kill_actors("cut-add")


def test_a_hanging_setup_command_times_out_while_other_demand_is_served(
        faulty: Faulty) -> None:
    """Fault: `worker_setup_commands: ["sleep 600"]` on node type slow (its one machine).
    Expected: the add of that machine hangs in its setup command until provision_timeout_s,
    then the machine is failed with a reason naming it; meanwhile an add for other demand (of
    type fast) completes and its actor runs. With the setup command fixed (during the hang),
    the machine is added again after its backoff and serves its demand; nothing is lost."""
    faulty.set_setup_commands("slow", ["sleep 600"])
    faulty.create("hung", selector={"tier": "slow"})
    faulty.wait(f"{faulty.slow} joining", lambda: faulty.states()[faulty.slow] == "joining",
                timeout=120)
    slow = faulty.machine(faulty.slow)
    faulty.wait("the setup command running on the slow machine",
                lambda: faulty.pool.ssh(slow, "pgrep", "-f", "sleep 600",
                                        check=False).returncode == 0, timeout=90)
    faulty.create("served", selector={"tier": "fast"})
    served = faulty.placed("served")
    assert served[0] in faulty.fast, served
    # ... while the hung add still runs.
    runs = faulty.add_runs()
    hung = next((r["request_id"] for r in runs if faulty.slow in r["ips"]), None)
    assert hung, runs
    assert faulty.states()[faulty.slow] == "joining"
    # Fixed on the head now, so that the retry after the backoff sets the machine up: the run
    # under way read its inventory when it started, and its setup command hangs on.
    faulty.set_setup_commands("slow", None)
    faulty.wait(f"{faulty.slow} failed", lambda: faulty.record(faulty.slow)["state"] == "failed",
                timeout=PROVISION_TIMEOUT_S + 60)
    record = faulty.record(faulty.slow)
    assert "provision_timeout_s" in record["reason"], record
    assert faulty.outcome(hung) == "timeout"
    assert faulty.placed("hung", timeout=240) == [faulty.slow]
    faulty.assert_nothing_lost("hung", "served")
    faulty.kill_actors("hung", "served")


def test_a_worker_killed_mid_job_is_replaced_and_its_actor_restarts_elsewhere(
        faulty: Faulty) -> None:
    """Fault: the container of a worker running an actor is killed (docker kill).
    Expected: Ray reports the node dead; the agent marks the machine failed with that reason
    and serves the actor's restart with another spare, where the actor answers again; once the
    container is started again, the machine is spare after its backoff or, when its Ray comes
    back ALIVE, adopted; nothing is lost."""
    since = faulty.now()
    faulty.create("job")
    victim = faulty.placed("job")[0]
    assert victim != faulty.chaos.head_ip
    faulty.wait(f"{victim} active", lambda: faulty.states()[victim] == "active", timeout=60)
    pools.kill(faulty.machine(victim))
    killed = time.monotonic()
    try:
        faulty.wait(f"{victim} dead in Ray", lambda: victim not in faulty.alive(), timeout=180)
        dead_s = time.monotonic() - killed
        assert faulty.nodes_at(victim)[-1]["state"] == "DEAD"
        faulty.wait(f"{victim} failed", lambda: faulty.record(victim)["state"] != "active",
                    timeout=60)
        assert f"mark {victim} (lost): Ray reports its node DEAD" in faulty.journal(since)
        elsewhere = faulty.placed("job", timeout=300)
        assert elsewhere[0] not in (victim, faulty.chaos.head_ip), elsewhere
    finally:
        pools.start(faulty.pool, faulty.machine(victim))
    faulty.assert_nothing_lost("job")
    log = [line for line in faulty.journal(since).splitlines() if victim in line]
    back = [line for line in log if "backoff after" in line or "adopted" in line]
    assert back, log
    print(f"\n{victim} DEAD in Ray {dead_s:.0f} s after the kill; after its restart: "
          + " | ".join(back))
    faulty.kill_actors("job")


def test_a_worker_cut_off_for_30_s_while_running_work_rejoins_with_nothing_lost(
        faulty: Faulty) -> None:
    """Fault: a worker running an actor is cut off the network for 30 s, then reconnected.
    Expected: it rejoins: Ray's GCS declares a node dead after 5 failed health checks, each
    waiting up to 10 s for an answer a cut-off node never sends, so after about a minute (a
    killed node, whose sockets close, goes in 13 s to 30 s: the test above). The same Ray node
    is ALIVE again, the agent never marked the machine, the actor ran on where it was, and
    nothing is lost."""
    since = faulty.now()
    faulty.create("steady")
    target = faulty.placed("steady")[0]
    assert target != faulty.chaos.head_ip
    before = faulty.nodes_at(target)[-1]
    assert before["state"] == "ALIVE", before
    pools.disconnect(faulty.pool, faulty.machine(target))
    try:
        time.sleep(CUT_S)
    finally:
        pools.connect(faulty.pool, faulty.machine(target))
    faulty.assert_nothing_lost("steady")
    after = {node["id"]: node for node in faulty.nodes_at(target)}
    assert after[before["id"]]["state"] == "ALIVE", after
    assert faulty.placed("steady") == [target]
    assert faulty.record(target)["state"] == "active"
    marks = [line for line in faulty.journal(since).splitlines() if f"mark {target} " in line]
    assert not marks, marks
    faulty.kill_actors("steady")
