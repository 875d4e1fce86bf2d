"""A join nobody needs any more is canceled, end to end: real Ray, real systemd, the agent under
its unit on the head canceling a real add_workers run through ansible-runner.

The pool's head and its workers, all prepared by `up`, none started (min_workers 0); the agent
runs every second and cancels an add unneeded for CANCEL_AFTER_S. Once `up` is done, the head's
cluster file gets a slow `worker_setup_commands` (a changed list runs again on the next add),
so an add run takes over a minute: time enough to watch it while the demand stays, then
after the demand went.

1. Demand for one worker more than the head holds: the agent starts an add. While the demand
   stays, for several times CANCEL_AFTER_S, nothing is canceled: the run goes on and its
   playbook runs on the head.
2. The demand goes: the run is canceled no earlier than CANCEL_AFTER_S after, and soon; its
   playbook is gone from the head; the machine is canceled, retired, then spare, with no
   failure counted, and Ray does not list it.
3. With the fast setup back, demand for every worker adds the canceled machine too.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from tests.cluster import Cluster, forget_agent, recap, stop_workers
from tests.e2e.test_autoscaling import HEAD_CLUSTER_FILE, Autoscaled
from tests.pool import pool as pools
from tests.pool.wheelhouse import ensure_wheelhouse

pytestmark = [pytest.mark.pool, pytest.mark.e2e]

CANCEL_AFTER_S = 5.0
# Long enough that the add is still running when the demand goes, well after the hold.
SLOW_SETUP = ["sleep 90"]
# While the demand stays the run must not be canceled, for this many times CANCEL_AFTER_S.
HOLD_FACTOR = 3
# From the demand gone to the cancel recorded: Ray dropping the demand, an iteration (1 s),
# ansible-runner noticing the cancel (1 s), the next poll; a busy host needs more.
CANCEL_SLACK_S = 20.0
NAMESPACE = "e2e-cancel"
# Detached actors of one CPU each, named holder-<i>.
CREATE_ACTORS = f"""
import sys, ray
ray.init(address=sys.argv[1], namespace={NAMESPACE!r}, logging_level="ERROR")
@ray.remote(num_cpus=1)
class Holder:
    def where(self):
        return ray.util.get_node_ip_address()
for i in range(int(sys.argv[2])):
    Holder.options(name=f"holder-{{i}}", lifetime="detached", get_if_exists=True).remote()
"""
# Where each actor runs, once all run (as JSON), or an error within the timeout.
ACTORS_PLACED = f"""
import json, sys, ray
ray.init(address=sys.argv[1], namespace={NAMESPACE!r}, logging_level="ERROR")
actors = [ray.get_actor(f"holder-{{i}}") for i in range(int(sys.argv[2]))]
print(json.dumps(ray.get([a.where.remote() for a in actors], timeout=float(sys.argv[3]))))
"""
# Kill holder-<i> for i below the count given (those that exist).
KILL_ACTORS = f"""
import sys, ray
ray.init(address=sys.argv[1], namespace={NAMESPACE!r}, logging_level="ERROR")
for i in range(int(sys.argv[2])):
    try:
        ray.kill(ray.get_actor(f"holder-{{i}}"))
    except ValueError:
        pass
"""
MOST_ACTORS = 100
# The head's CPUs as Ray counts them.
HEAD_CPUS = """
import sys
from ray._raylet import GcsClient
from ray.core.generated import gcs_pb2
nodes = GcsClient(address=sys.argv[1]).get_all_node_info(timeout=10).values()
print(int(next(n.resources_total["CPU"] for n in nodes
               if n.is_head_node and n.state == gcs_pb2.GcsNodeInfo.ALIVE)))
"""
# The journal with each line's time (seconds since the epoch) first.
_JOURNAL_LINE = re.compile(r"^(\d+\.\d+) \S+ [^:]+: (.*)$")


class Canceling(Autoscaled):
    def set_worker_setup_commands(self, commands: list[str]) -> None:
        """Change worker_setup_commands of the head's cluster file; the agent reads it again."""
        self.edit_head_cluster_file(lambda data: data | {"worker_setup_commands": commands})

    def edit_head_cluster_file(self, change: Callable[[dict], dict]) -> None:
        text = self.ssh("cat", HEAD_CLUSTER_FILE).stdout
        since = self.now()
        self.ssh("sudo", "tee", HEAD_CLUSTER_FILE,
                 stdin=yaml.safe_dump(change(yaml.safe_load(text)), sort_keys=False))
        self.ssh("sudo", "systemctl", "reload", "onprem-ray-agent.service")
        self.wait("the agent read its cluster file again",
                  lambda: "SIGHUP: cluster file" in self.journal(since), timeout=60)

    def timed_journal(self, since: str) -> list[tuple[float, str]]:
        """The agent's log lines from `since` (the head's `date +%s`), each with its time."""
        out = self.ssh("sudo", "journalctl", "-u", "onprem-ray-agent", "--no-pager",
                       "-o", "short-unix", "--since", f"@{since}").stdout
        return [(float(m[1]), m[2]) for m in map(_JOURNAL_LINE.match, out.splitlines()) if m]

    def clock(self) -> float:
        return float(self.ssh("date", "+%s.%N").stdout)

    def add_playbooks(self, ip: str) -> list[str]:
        """The add_workers playbooks running on the head for `ip` (their command lines)."""
        out = self.ssh("ps", "-eo", "args=").stdout
        return [line for line in out.splitlines()
                if "ansible-playbook" in line and "add_workers" in line and ip in line]

    def ssh_clients(self, ip: str) -> list[str]:
        """The ssh commands on the head to `ip` (a playbook's connections)."""
        out = self.ssh("ps", "-eo", "args=").stdout
        return [line for line in out.splitlines()
                if line.split()[:1] == ["ssh"] and ip in line.split()]

    def record(self, ip: str) -> dict[str, Any]:
        return next(m for m in self.status()["machines"] if m["ip"] == ip)

    def runs(self) -> list[dict[str, Any]]:
        status = self.status()
        return status["running"] + status["recent_runs"]


@pytest.fixture(scope="module")
def canceling(pool: pools.Pool, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[Canceling]:
    assert len(pool.workers) >= 2, "this test needs a head and at least 2 workers"
    source = yaml.safe_load(pool.inventory.read_text())
    source.update(min_workers=0, max_workers=len(pool.workers), idle_timeout_minutes=5)
    inventory = tmp_path_factory.mktemp("canceling") / "cluster.yml"
    inventory.write_text(yaml.safe_dump(source, sort_keys=False))
    cluster = Cluster(pool=pool, wheelhouse=ensure_wheelhouse(), inventory=inventory)
    stop_workers(pool)  # start from no worker running
    # ... and from an agent that remembers nothing of earlier tests on this pool.
    forget_agent(pool)
    result = cluster.playbook("up", "-e", "ray_up_workers=min", "-e", "head_agent_enabled=true",
                              "-e", "head_agent_interval=1",
                              "-e", f"head_agent_cancel_join_after={CANCEL_AFTER_S}",
                              timeout=1800)
    assert all(r["failed"] == 0 and r["unreachable"] == 0
               for r in recap(result.stdout).values()), result.stdout[-3000:]
    made = Canceling(cluster=cluster, unreachable="")
    made.wait("only the head ALIVE", lambda: made.workers_alive() == set(), timeout=120)
    made.set_worker_setup_commands(SLOW_SETUP)
    yield made
    made.ray(KILL_ACTORS, str(MOST_ACTORS), timeout=120)
    made.ssh("sudo", "systemctl", "disable", "--now", "onprem-ray-agent.service")


def test_a_join_is_kept_while_needed_and_canceled_once_not(canceling: Canceling) -> None:
    scaled = canceling
    workers = {m.ip for m in scaled.cluster.pool.workers}
    cpus = int(scaled.ray(HEAD_CPUS))
    since = scaled.now()

    # 1. One actor more than the head holds: one worker is added, slowly.
    scaled.ray(CREATE_ACTORS, str(cpus + 1))
    scaled.wait("an add run", lambda: bool(scaled.status()["running"]), timeout=120)
    started_at = time.monotonic()
    [run] = scaled.status()["running"]
    run_id, [ip] = run["request_id"], run["ips"]
    assert run["kind"] == "add" and ip in workers, run
    assert scaled.record(ip)["state"] == "joining", scaled.record(ip)
    assert scaled.add_playbooks(ip), "no add_workers playbook runs on the head for the run"
    scaled.wait(f"a connection to {ip}", lambda: bool(scaled.ssh_clients(ip)), timeout=60)
    # Host keys are checked as the inventory says: no blanket StrictHostKeyChecking=no
    # (ssh takes the first value given).
    for command in scaled.ssh_clients(ip):
        options = re.findall(r"StrictHostKeyChecking=(\S+)", command)
        assert options and options[0] != "no", command
    # The demand stays: never canceled, never counted as unneeded.
    while time.monotonic() - started_at < HOLD_FACTOR * CANCEL_AFTER_S:
        decision = scaled.status()["last_iteration"]["decision"]
        assert decision is not None and run_id not in decision.get("unneeded_since", {}), \
            decision
        time.sleep(1)
    assert [r["request_id"] for r in scaled.status()["running"]] == [run_id]
    assert scaled.record(ip)["state"] == "joining", scaled.record(ip)
    assert scaled.add_playbooks(ip), "the add run ended while its demand stayed"
    assert not [line for _, line in scaled.timed_journal(since) if "(join_canceled)" in line]

    # 2. The demand goes: canceled after CANCEL_AFTER_S, no earlier.
    before_kill = scaled.clock()
    scaled.ray(KILL_ACTORS, str(cpus + 1))
    after_kill = scaled.clock()
    scaled.wait("the run canceled", lambda: any(
        r["request_id"] == run_id and r["outcome"] for r in scaled.runs()), timeout=120)
    ended = next(r for r in scaled.runs() if r["request_id"] == run_id)
    assert ended["outcome"] == "canceled", ended
    log = scaled.timed_journal(since)
    [(canceled_at, cancel)] = [(at, line) for at, line in log if "(join_canceled)" in line]
    assert f"[run {run_id}]" in cancel and ip in cancel, cancel
    unneeded_since = float(re.search(r"no demand needs .* since (\d+) \(cancel_join_after_s "
                                     rf"{CANCEL_AFTER_S:g}\)", cancel)[1])
    # The count began once the demand went (the reason's time is whole seconds).
    assert unneeded_since >= int(before_kill), (cancel, before_kill)
    assert canceled_at - before_kill >= CANCEL_AFTER_S, (canceled_at, before_kill)
    assert ended["finished"] - after_kill <= CANCEL_AFTER_S + CANCEL_SLACK_S, \
        (ended, after_kill)
    print(f"\ndemand gone -> cancel decided: {canceled_at - before_kill:.1f} s, -> run "
          f"recorded canceled: {ended['finished'] - before_kill:.1f} s "
          f"(cancel_join_after_s {CANCEL_AFTER_S:g})")
    assert scaled.add_playbooks(ip) == [], "the canceled run's playbook still runs"

    # Canceled (no fault of the machine), retired, then spare; Ray never listed it.
    scaled.wait(f"{ip} spare", lambda: scaled.record(ip)["state"] == "spare", timeout=180)
    record = scaled.record(ip)
    assert record["failures"] == 0 and record["next_attempt_at"] == 0, record
    log = [line for _, line in scaled.timed_journal(since)]
    steps = [
        rf"run {run_id} \(add\) canceled: {re.escape(ip)} ",
        rf"INFO retire {re.escape(ip)} \(drain_requested\): its add was canceled "
        rf"\(run {run_id}\).* \[run (\S+)\]",
    ]
    seen = [next((i for i, line in enumerate(log) if re.search(step, line)), -1)
            for step in steps]
    assert -1 not in seen and seen == sorted(seen), (seen, log[-40:])
    retire_id = re.search(steps[1], log[seen[1]])[1]
    retired = next(r for r in scaled.runs() if r["request_id"] == retire_id)
    assert retired["outcome"] == "successful" and retired["hosts"] == {ip: "ok"}, retired
    assert ip not in scaled.workers_alive()
    machine = next(m for m in scaled.cluster.pool.workers if m.ip == ip)
    assert scaled.cluster.unit(machine)["ActiveState"] == "inactive"
    _no_machine_in_two_runs_at_once(scaled.runs())
    assert scaled.status()["running"] == []

    # 3. With the fast setup back, demand for every worker adds the canceled machine too.
    scaled.set_worker_setup_commands([])
    count = cpus * len(workers) + 1
    scaled.ray(CREATE_ACTORS, str(count))
    scaled.wait("every worker ALIVE", lambda: scaled.workers_alive() == workers, timeout=300)
    placed = json.loads(scaled.ray(ACTORS_PLACED, str(count), "120"))
    assert ip in placed, placed
    scaled.wait("every worker active", lambda: all(
        scaled.record(w)["state"] == "active" for w in workers), timeout=60)
    _no_machine_in_two_runs_at_once(scaled.runs())


def _no_machine_in_two_runs_at_once(runs: list[dict[str, Any]]) -> None:
    spans: dict[str, list[tuple[float, float]]] = {}
    for run in runs:
        for ip in run["ips"]:
            spans.setdefault(ip, []).append((run["started"], run["finished"] or float("inf")))
    assert spans, runs
    for ip, times in spans.items():
        times.sort()
        assert all(end <= start for (_, end), (start, _) in itertools.pairwise(times)), (ip, runs)
