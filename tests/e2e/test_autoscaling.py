"""The agent scales the local test pool by Ray's demand, end to end: real Ray, real systemd,
the agent under its unit on the head running the collection's playbooks over SSH.

The pool's head and 3 workers, all prepared by `up`, none started (min_workers 0); the agent
runs every second with an idle timeout of 15 s. The tests run in file order, each starting
from the state the one before left:

1. an address that nothing answers is the first spare; demand for one more machine makes the
   agent try it, fail, back off and use a real spare instead (which retires once idle);
2. detached actors needing 3 CPUs more than the cluster has make it add exactly the 2 workers
   needed (2 CPUs each), and the actors run;
3. removing an active worker's address from the cluster file on the head (then SIGHUP) drains
   it (its actors keep running until they end), retires it and forgets it;
4. once the actors are gone, the workers retire after the idle timeout.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.cluster import Cluster, recap, stop_workers
from tests.pool import pool as pools
from tests.pool.wheelhouse import ensure_wheelhouse

pytestmark = [pytest.mark.pool, pytest.mark.e2e]

IDLE_TIMEOUT_MINUTES = 0.25
HEAD_CLUSTER_FILE = "/etc/onprem-ray/cluster.yml"
STATE_DIR = "/var/lib/onprem-ray/agent"
AGENT = ["onprem-ray-agent"]  # the head role's command line for operators
RAY_USER = ["sudo", "-u", "ray", "env", "RAY_AUTH_MODE=token",
            "RAY_AUTH_TOKEN_PATH=/etc/ray/auth_token", "/opt/ray/venv/bin/python", "-c"]
# Detached actors of one CPU each, named holder-<i> in namespace e2e.
CREATE_ACTORS = """
import sys, ray
ray.init(address=sys.argv[1], namespace="e2e", logging_level="ERROR")
@ray.remote(num_cpus=1)
class Holder:
    def where(self):
        return ray.util.get_node_ip_address()
for i in range(int(sys.argv[2])):
    Holder.options(name=f"holder-{i}", lifetime="detached", get_if_exists=True).remote()
"""
# Where each actor runs, once all run (as JSON), or an error within the timeout.
ACTORS_PLACED = """
import json, sys, ray
ray.init(address=sys.argv[1], namespace="e2e", logging_level="ERROR")
actors = [ray.get_actor(f"holder-{i}") for i in range(int(sys.argv[2]))]
print(json.dumps(ray.get([a.where.remote() for a in actors], timeout=float(sys.argv[3]))))
"""
# Kill holder-<i> for each index given.
KILL_ACTORS = """
import sys, ray
ray.init(address=sys.argv[1], namespace="e2e", logging_level="ERROR")
for i in sys.argv[2:]:
    try:
        ray.kill(ray.get_actor(f"holder-{i}"))
    except ValueError:
        pass
"""
ALL = [str(i) for i in range(5)]
# How each node Ray saw end died, latest first per address: a drain by the agent reads
# AUTOSCALER_DRAIN_IDLE or AUTOSCALER_DRAIN_PREEMPTED, a plain stop EXPECTED_TERMINATION.
DEATHS = """
import json, sys
from ray._raylet import GcsClient
from ray.core.generated import common_pb2, gcs_pb2
nodes = GcsClient(address=sys.argv[1]).get_all_node_info(timeout=10).values()
dead = sorted((n for n in nodes if n.state == gcs_pb2.GcsNodeInfo.DEAD),
              key=lambda n: -n.end_time_ms)
print(json.dumps([{"ip": n.node_manager_address, "end_ms": n.end_time_ms,
                   "reason": common_pb2.NodeDeathInfo.Reason.Name(n.death_info.reason),
                   "message": n.death_info.reason_message} for n in dead]))
"""


@dataclass
class Autoscaled:
    cluster: Cluster
    unreachable: str

    @property
    def head(self) -> pools.Machine:
        return self.cluster.pool.head

    def ssh(self, *remote: str, timeout: float = 120, stdin: str | None = None
            ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.cluster.pool.ssh_command(self.head, *remote), input=stdin,
                                capture_output=True, text=True, timeout=timeout, check=False)
        assert result.returncode == 0, f"{remote[:3]}: {result.stdout[-3000:]}{result.stderr}"
        return result

    def ray(self, script: str, *args: str, timeout: float = 180) -> str:
        return self.ssh(*RAY_USER, script, self.cluster.gcs, *args, timeout=timeout).stdout

    def status(self) -> dict[str, Any]:
        out = self.ssh(*AGENT, "status", "--state-dir", STATE_DIR, "--json", "--no-decide")
        return json.loads(out.stdout)

    def states(self) -> dict[str, str]:
        return {m["ip"]: m["state"] for m in self.status()["machines"]}

    def journal(self, since: str = "") -> str:
        """The agent's log, from `since` (the head's `date +%s`) when given."""
        after = ["--since", f"@{since}"] if since else []
        return self.ssh("sudo", "journalctl", "-u", "onprem-ray-agent", "--no-pager",
                        "-o", "cat", *after).stdout

    def now(self) -> str:
        return self.ssh("date", "+%s").stdout.strip()

    def death(self, ip: str) -> dict[str, Any]:
        """How Ray recorded the end of the latest node at `ip`."""
        deaths = json.loads(self.ray(DEATHS))
        return next(d for d in deaths if d["ip"] == ip)

    def wait(self, what: str, check: Callable[[], bool], timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if check():
                return time.monotonic() - started
            time.sleep(1)
        raise AssertionError(f"not within {timeout:.0f} s: {what}\nagent states: "
                             f"{self.states()}\nagent log:\n{self.journal()[-4000:]}")

    def edit_cluster_file(self, change: Callable[[list[str]], list[str]]) -> None:
        """Change the worker list of the head's cluster file, then SIGHUP the agent."""
        text = self.ssh("cat", HEAD_CLUSTER_FILE).stdout
        data = yaml.safe_load(text)
        data["provider"]["worker_ips"] = change(list(data["provider"]["worker_ips"]))
        # A max_workers above the pool is refused: keep it at the pool's size.
        data["max_workers"] = len(data["provider"]["worker_ips"])
        self.ssh("sudo", "tee", HEAD_CLUSTER_FILE, stdin=yaml.safe_dump(data, sort_keys=False))
        self.ssh("sudo", "systemctl", "reload", "onprem-ray-agent.service")

    def workers_alive(self) -> set[str]:
        return self.cluster.alive_ips() - {self.head.ip}


@pytest.fixture(scope="module")
def scaled(pool: pools.Pool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Autoscaled]:
    source = yaml.safe_load(pool.inventory.read_text())
    source.update(min_workers=0, max_workers=len(pool.workers),
                  idle_timeout_minutes=IDLE_TIMEOUT_MINUTES)
    inventory = tmp_path_factory.mktemp("autoscaled") / "cluster.yml"
    inventory.write_text(yaml.safe_dump(source, sort_keys=False))
    cluster = Cluster(pool=pool, wheelhouse=ensure_wheelhouse(), inventory=inventory)
    # Workers a former test left running are retired by the agent as idle: start from none.
    stop_workers(pool)
    result = cluster.playbook("up", "-e", "ray_up_workers=min", "-e", "head_agent_enabled=true",
                              "-e", "head_agent_interval=1")
    counts = recap(result.stdout)
    assert set(counts) == {m.ip for m in pool.machines}, counts
    assert all(r["failed"] == 0 and r["unreachable"] == 0 for r in counts.values()), counts
    network = ipaddress.ip_network(pool.subnet)
    made = Autoscaled(cluster=cluster, unreachable=str(network.network_address + 5))
    made.wait("only the head ALIVE", lambda: made.workers_alive() == set(), timeout=120)
    yield made
    made.ray(KILL_ACTORS, *ALL, timeout=120)
    made.ssh("sudo", "systemctl", "disable", "--now", "onprem-ray-agent.service")


def test_an_unreachable_spare_fails_backs_off_and_another_is_used(scaled: Autoscaled) -> None:
    # The lowest address goes first among machines that never joined.
    scaled.edit_cluster_file(lambda ips: [scaled.unreachable, *ips])
    scaled.wait("the new address admitted as spare",
                lambda: scaled.states().get(scaled.unreachable) == "spare", timeout=60)
    scaled.ray(CREATE_ACTORS, "3")  # the head has 2 CPUs: one actor waits
    scaled.wait("one real worker ALIVE", lambda: len(scaled.workers_alive()) == 1, timeout=240)
    record = next(m for m in scaled.status()["machines"] if m["ip"] == scaled.unreachable)
    assert record["state"] in ("failed", "spare"), record
    assert record["failures"] == 1 and record["next_attempt_at"] > 0, record
    assert "unreachable" in record["reason"] or "UNREACHABLE" in record["last_error"] \
        or "ssh" in record["last_error"].lower(), record
    placed = json.loads(scaled.ray(ACTORS_PLACED, "3", "120"))
    assert set(placed) == {scaled.head.ip} | scaled.workers_alive()
    # Without the address again: it is forgotten (it runs nothing). Without the actors, the
    # worker retires once idle: back to the head alone.
    scaled.edit_cluster_file(lambda ips: [ip for ip in ips if ip != scaled.unreachable])
    scaled.wait("the address forgotten",
                lambda: scaled.unreachable not in scaled.states(), timeout=60)
    scaled.ray(KILL_ACTORS, *ALL[:3])
    scaled.wait("the worker retired", lambda: scaled.workers_alive() == set(),
                timeout=IDLE_TIMEOUT_MINUTES * 60 + 180)


def test_detached_actors_get_exactly_the_workers_they_need(scaled: Autoscaled) -> None:
    # 5 actors of 1 CPU on a head of 2 CPUs: 3 CPUs more than the cluster has, so 2 workers of
    # 2 CPUs each, no more.
    scaled.ray(CREATE_ACTORS, "5")
    scaled.wait("two workers ALIVE", lambda: len(scaled.workers_alive()) == 2, timeout=240)
    placed = json.loads(scaled.ray(ACTORS_PLACED, "5", "120"))
    assert len(placed) == 5 and set(placed) == {scaled.head.ip} | scaled.workers_alive()
    time.sleep(5)  # a few more iterations: nothing more is added
    assert len(scaled.workers_alive()) == 2
    states = scaled.states()
    assert sorted(states.values()) == ["active", "active", "spare"], states
    # Prometheus metrics on the head's private address (not on loopback, not on 0.0.0.0).
    metrics = scaled.ssh("python3", "-c", "import sys, urllib.request; print(urllib.request."
                         "urlopen(sys.argv[1], timeout=10).read().decode())",
                         f"http://{scaled.head.ip}:9480/metrics").stdout
    assert 'onprem_ray_agent_machines{node_type="local.cluster.node",state="active"} 2.0' \
        in metrics, metrics[:2000]
    assert 'onprem_ray_agent_playbook_runs_total{outcome="successful",' in metrics
    assert "onprem_ray_agent_scale_up_latency_seconds_count" in metrics
    listening = scaled.ssh("ss", "-Hltn", "sport = :9480").stdout.split()
    assert f"{scaled.head.ip}:9480" in listening, listening


def test_removing_an_active_worker_from_the_inventory_drains_and_retires_it(
        scaled: Autoscaled) -> None:
    placed = json.loads(scaled.ray(ACTORS_PLACED, "5", "60"))
    leaving = sorted(scaled.workers_alive())[0]
    scaled.edit_cluster_file(lambda ips: [ip for ip in ips if ip != leaving])
    # Drained, not cut off: the node keeps its actors until they end (or the drain deadline).
    scaled.wait(f"{leaving} draining", lambda: scaled.states().get(leaving) == "draining",
                timeout=60)
    assert leaving in scaled.workers_alive()
    scaled.ray(KILL_ACTORS, *[str(i) for i, ip in enumerate(placed) if ip == leaving])
    scaled.wait(f"{leaving} gone from Ray", lambda: leaving not in scaled.workers_alive(),
                timeout=120)
    scaled.wait(f"{leaving} forgotten", lambda: leaving not in scaled.states(), timeout=60)
    machine = next(m for m in scaled.cluster.pool.workers if m.ip == leaving)
    assert scaled.cluster.unit(machine)["ActiveState"] == "inactive"
    # Drained through Ray (a plain stop of the unit would read EXPECTED_TERMINATION).
    assert scaled.death(leaving)["reason"] == "AUTOSCALER_DRAIN_PREEMPTED", \
        scaled.death(leaving)
    scaled.edit_cluster_file(lambda ips: sorted([*ips, leaving]))


def test_idle_workers_retire_after_the_idle_timeout(scaled: Autoscaled) -> None:
    since = scaled.now()
    busy = scaled.workers_alive()
    assert busy, "the earlier tests left no worker running"
    busy_until = time.monotonic()  # the workers cannot turn idle before the kill is sent
    scaled.ray(KILL_ACTORS, *ALL)
    scaled.wait("every worker retired", lambda: scaled.workers_alive() == set(),
                timeout=IDLE_TIMEOUT_MINUTES * 60 + 180)
    took = time.monotonic() - busy_until
    print(f"\nactors killed -> workers gone from Ray: {took:.1f} s "
          f"(idle timeout {IDLE_TIMEOUT_MINUTES * 60:.0f} s)")
    # Not before the idle timeout, counted from before the kill (so no slack is needed).
    assert took >= IDLE_TIMEOUT_MINUTES * 60, took
    scaled.wait("every machine spare",
                lambda: set(scaled.states().values()) == {"spare"}, timeout=60)
    log = scaled.journal(since)
    for ip in busy:  # each retired for being idle, in this test, drained as idle
        assert re.search(rf"^\S+ \S+ INFO retire [^(]*\b{re.escape(ip)}\b[^(]*\(idle_expired\)",
                         log, re.MULTILINE), log[-3000:]
        assert scaled.death(ip)["reason"] == "AUTOSCALER_DRAIN_IDLE", scaled.death(ip)


def test_the_agent_killed_during_an_add_restarts_and_reconciles(scaled: Autoscaled) -> None:
    """SIGKILL in the middle of add_workers: systemd starts the agent again, which records the
    run it lost, fails or adopts its machine against Ray, and still gets the demand a worker."""
    since = scaled.now()
    scaled.ray(CREATE_ACTORS, "3")  # one more CPU than the head has

    def add_started() -> str:
        log = scaled.ssh("sudo", "journalctl", "-u", "onprem-ray-agent", "--no-pager", "-o",
                         "cat", "--since", f"@{since}").stdout
        return next((line.split("[run ")[1].rstrip("]") for line in log.splitlines()
                     if "(add_requested)" in line), "")
    scaled.wait("an add run started", lambda: bool(add_started()), timeout=120)
    killed = add_started()
    scaled.ssh("sudo", "systemctl", "kill", "--signal=KILL", "onprem-ray-agent.service")
    placed = json.loads(scaled.ray(ACTORS_PLACED, "3", "300", timeout=360))
    assert scaled.head.ip in placed and set(placed) - {scaled.head.ip} <= scaled.workers_alive()
    # Every worker Ray lists is one the agent knows as active: none leaked, none joining.
    scaled.wait("no machine joining", lambda: "joining" not in scaled.states().values(),
                timeout=120)
    status = scaled.status()
    run = next(r for r in status["recent_runs"] if r["request_id"] == killed)
    # Lost: the kill landed while the playbook ran (a run that ended first reads its outcome).
    assert run["outcome"] == "interrupted", run
    assert re.search(rf"run {killed} \(add on .*recorded as interrupted", scaled.journal(since)), \
        scaled.journal(since)[-3000:]
    assert status["running"] == [] or all(r["request_id"] != killed for r in status["running"])
    states, alive = scaled.states(), scaled.workers_alive()
    assert alive and all(states[ip] == "active" for ip in alive), (states, alive)
    restarts = scaled.ssh("systemctl", "show", "-p", "NRestarts", "--value",
                          "onprem-ray-agent.service").stdout.strip()
    assert int(restarts) >= 1
