"""`up` and the agent at the same time, end to end: real Ray, real systemd, the agent under its
unit on the head, `up` through ansible-playbook over real SSH.

`up` owns the workers it starts (it tells the agent first, onprem.ray.up_claim); the agent
never adds them, records them joined when Ray lists them ("seen ALIVE in Ray", never
"adopted"), retires none of them as idle until `up` ends its claim (its last task), and then
counts their idle time from that join. A worker the agent is adding when `up` comes stays the
agent's: `up` waits for that run, then claims the others.

1. The first `up` of a fresh pool, the agent on by default, every worker started, a short idle
   timeout: `up` succeeds, every worker is ALIVE at its end, the agent added none of them, and
   `up` ended its claim (the agent removed the claim file).
1b. An `up` over running workers that takes longer than the idle timeout, its claim and its
   end made by the module as `up`'s tasks make them: no worker is retired while the claim is
   open, idle as they are; once ended, they retire.
2. The agent running with demand pending (it is adding a worker), `up` starts every worker:
   the same, and the agent's add was not doubled.
3. `up` fails on one worker after its claim (a setup command fails there): `up` releases it,
   the agent records it spare at once with no failure counted, and adds it for new demand
   within seconds, not after provision_timeout_s.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.cluster import Cluster, recap
from tests.pool import pool as pools
from tests.pool.wheelhouse import REPO_ROOT, ensure_wheelhouse

pytestmark = [pytest.mark.pool, pytest.mark.e2e]

IDLE_TIMEOUT_MINUTES = 0.5
STATE_DIR = "/var/lib/onprem-ray/agent"
CLAIM_FILE = f"{STATE_DIR}/up-claim.json"
# A worker setup command that fails where this file exists (test 3 makes it on one worker).
FAIL_MARK = "/var/tmp/onprem-ray-test-fail-setup"
RAY_USER = ["sudo", "-u", "ray", "env", "RAY_AUTH_MODE=token",
            "RAY_AUTH_TOKEN_PATH=/etc/ray/auth_token", "/opt/ray/venv/bin/python", "-c"]
# Detached actors of one CPU each: demand beyond the head's 2 CPUs.
CREATE_ACTORS = """
import sys, ray
ray.init(address=sys.argv[1], namespace="race", logging_level="ERROR")
@ray.remote(num_cpus=1)
class Holder:
    pass
for i in range(int(sys.argv[2])):
    Holder.options(name=f"holder-{i}", lifetime="detached", get_if_exists=True).remote()
"""
KILL_ACTORS = """
import sys, ray
ray.init(address=sys.argv[1], namespace="race", logging_level="ERROR")
for i in range(int(sys.argv[2])):
    try:
        ray.kill(ray.get_actor(f"holder-{i}"))
    except ValueError:
        pass
"""


class Head:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.pool = cluster.pool

    def ssh(self, *remote: str, timeout: float = 120) -> str:
        result = subprocess.run(self.pool.ssh_command(self.pool.head, *remote),
                                capture_output=True, text=True, timeout=timeout, check=False)
        assert result.returncode == 0, f"{remote[:3]}: {result.stdout[-3000:]}{result.stderr}"
        return result.stdout

    def status(self) -> dict[str, Any]:
        return json.loads(self.ssh("onprem-ray-agent", "status", "--state-dir", STATE_DIR,
                                   "--json", "--no-decide"))

    def journal(self, since: str, until: str = "") -> str:
        """The agent's log from `since` (to `until`), the head's `date +%s`."""
        end = ["--until", f"@{until}"] if until else []
        return self.ssh("sudo", "journalctl", "-u", "onprem-ray-agent", "--no-pager", "-o",
                        "cat", "--since", f"@{since}", *end)

    def now(self) -> str:
        return self.ssh("date", "+%s").strip()

    def claim_file(self) -> bool:
        return self.ssh("sudo", "sh", "-c", f"test -e {CLAIM_FILE} && echo yes || echo no"
                        ).strip() == "yes"

    def up_claim(self, **args: Any) -> dict[str, Any]:
        """onprem.ray.up_claim on the head, as `up`'s tasks run it (ad hoc)."""
        env = {**os.environ, "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
               "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
        argv = ["ansible", "-i", str(self.cluster.inventory), "ray_head", "-b", "-o",
                "-m", "onprem.ray.up_claim", "-a", json.dumps(args)]
        result = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                                timeout=600, check=False)
        assert result.returncode == 0, f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
        return json.loads(result.stdout.split("=>", 1)[1])

    def ray(self, script: str, *args: str) -> None:
        self.ssh(*RAY_USER, script, self.cluster.gcs, *args, timeout=180)

    def workers_alive(self) -> set[str]:
        return self.cluster.alive_ips() - {self.pool.head.ip}

    def wait(self, what: str, check, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(2)
        raise AssertionError(f"not within {timeout:.0f} s: {what}; {self.status()}")

    def up_all(self, since: str) -> str:
        """`up -e ray_up_workers=all`, which succeeds: its last play saw every worker ALIVE,
        and the agent retired none while it ran. Returns the agent's log meanwhile."""
        # ray_start_timeout: on a loaded test machine a raylet may need its unit's restart
        result = self.cluster.playbook("up", "-e", "ray_up_workers=all",
                                       "-e", "head_agent_interval=1",
                                       "-e", "ray_start_timeout=600", timeout=2400)
        ended = self.now()
        counts = recap(result.stdout)
        assert set(counts) == {m.ip for m in self.pool.machines}, counts
        assert all(c["failed"] == 0 and c["unreachable"] == 0 for c in counts.values()), counts
        assert "Ray workers ALIVE" in result.stdout
        log = self.journal(since, ended)
        assert "retire " not in log and "(idle_expired)" not in log, log[-4000:]
        return log


def assert_one_owner(head: Head, since: str, runs_before: set[str]) -> dict[str, Any]:
    """The store after `up`: no failed, canceled or adopted record; no machine in two runs
    (of those started since `since`); the agent's log says the same."""
    status = head.status()
    machines = status["machines"]
    assert {m["ip"] for m in machines} == {m.ip for m in head.pool.workers}, machines
    bad = [m for m in machines if m["state"] in ("failed", "canceled", "quarantined")
           or "adopted" in m["reason"]]
    assert not bad, bad
    runs = [r for r in status["running"] + status["recent_runs"]
            if r["request_id"] not in runs_before]
    per_machine = Counter(ip for run in runs for ip in run["ips"])
    assert all(count == 1 for count in per_machine.values()), runs
    assert all(r["outcome"] in (None, "successful") for r in runs), runs
    log = head.journal(since)
    assert "adopted" not in log and "canceled" not in log, log[-4000:]
    return status


@pytest.fixture(scope="module")
def head(pool: pools.Pool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Head]:
    assert len(pool.workers) >= 2, "these tests need a head and 2 workers or more"
    source = yaml.safe_load(pool.inventory.read_text())
    source.update(min_workers=0, max_workers=len(pool.workers),
                  idle_timeout_minutes=IDLE_TIMEOUT_MINUTES)
    inventory = tmp_path_factory.mktemp("race") / "cluster.yml"
    inventory.write_text(yaml.safe_dump(source, sort_keys=False))
    made = Head(Cluster(pool=pool, wheelhouse=ensure_wheelhouse(), inventory=inventory))
    # The pool as fresh as it comes (other tests of the session may have used it): `down`
    # stops the agent and Ray everywhere and removes the agent, its state and Ray's units.
    made.cluster.playbook("down", timeout=900)
    yield made
    made.ray(KILL_ACTORS, "8")
    made.ssh("sudo", "systemctl", "disable", "--now", "onprem-ray-agent.service")


def test_the_first_up_starts_every_worker_with_the_agent_on(head: Head) -> None:
    # A fresh pool: no agent, no state store, Ray nowhere.
    assert head.ssh("sh", "-c", f"test -e {STATE_DIR}/state.db && echo yes || echo no"
                    ).strip() == "no"
    since = head.now()
    head.up_all(since)
    status = assert_one_owner(head, since, set())
    # The agent added none of them: up started them all, and the agent saw them join.
    assert not [r for r in status["recent_runs"] + status["running"] if r["kind"] == "add"]
    # The agent logs a join at its first iteration after Ray lists the worker ALIVE, which
    # may come after `up` returned.
    def joined(worker: pools.Machine) -> bool:
        return bool(re.search(rf"mark [^(]*\b{re.escape(worker.ip)}\b[^(]*\(joined\): seen "
                              r"ALIVE in Ray \(started by up", head.journal(since)))
    head.wait("every worker's join logged", lambda: all(map(joined, head.pool.workers)),
              timeout=30)
    # up's last task ended the claim (it succeeded): the agent applied the end and removed it
    head.wait("up's claim ended and removed", lambda: not head.claim_file(), timeout=60)


def test_workers_up_started_are_not_retired_as_idle_until_up_ends_its_claim(
        head: Head) -> None:
    """The race of issue 14: `up` (here over running workers) still at work after its workers
    have been idle longer than the idle timeout (30 s)."""
    workers = {m.ip for m in head.pool.workers}
    # Every worker running Ray and busy: more one-CPU actors than the cluster has CPUs (the
    # agent adds any worker retired since the first test).
    head.ray(CREATE_ACTORS, "16")
    head.wait("every worker ALIVE", lambda: head.workers_alive() == workers, timeout=600)
    head.wait("no run of the agent under way", lambda: not head.status()["running"],
              timeout=600)
    claimed = head.up_claim(ips=sorted(workers))  # up's claim task
    assert claimed["waited_for"] == {}, claimed
    since = head.now()
    head.ray(KILL_ACTORS, "16")  # idle from now on, while up goes on
    # up still at work: twice the idle timeout and more, no worker retired, all ALIVE.
    deadline = time.monotonic() + 4 * IDLE_TIMEOUT_MINUTES * 60
    while time.monotonic() < deadline:
        assert head.workers_alive() == workers
        time.sleep(5)
    log = head.journal(since)
    assert "retire " not in log and "(idle_expired)" not in log, log[-4000:]
    assert head.claim_file()  # open: the agent keeps it
    ended = head.up_claim(state="ended", claim_id=claimed["claim_id"], ips=[])  # up's last task
    assert ended["ended"] and ended["released"] == [], ended
    # Ended: the idle workers retire at once, as usual, and the claim file goes.
    head.wait("the idle workers retired", lambda: head.workers_alive() == set(), timeout=300)
    assert not head.claim_file()
    log = head.journal(since)
    for worker in workers:
        assert re.search(rf"retire [^(]*\b{re.escape(worker)}\b[^(]*\(idle_expired\)", log), \
            log[-4000:]


def test_up_while_the_agent_adds_a_worker_for_pending_demand(head: Head) -> None:
    # From none running: the idle workers retire (after the idle timeout, from their join).
    head.wait("every worker retired", lambda: head.workers_alive() == set(), timeout=300)
    head.wait("every machine spare",
              lambda: {m["state"] for m in head.status()["machines"]} == {"spare"}, timeout=120)
    runs_before = {r["request_id"] for r in head.status()["recent_runs"]}
    since = head.now()
    head.ray(CREATE_ACTORS, "3")  # the head has 2 CPUs: one worker more is needed

    def adding() -> bool:
        return any(r["kind"] == "add" for r in head.status()["running"])
    head.wait("the agent adds a worker", adding, timeout=120)
    log = head.up_all(since)
    status = assert_one_owner(head, since, runs_before)
    adds = [r for r in status["recent_runs"] + status["running"]
            if r["kind"] == "add" and r["request_id"] not in runs_before]
    assert len(adds) == 1 and len(adds[0]["ips"]) == 1, adds
    added = adds[0]["ips"][0]
    others = [m.ip for m in head.pool.workers if m.ip != added]
    assert others
    for worker in others:  # up started them
        assert re.search(rf"mark [^(]*\b{re.escape(worker)}\b[^(]*\(claimed\)", log), \
            log[-4000:]
    # the agent's own: joined from its add, never claimed
    assert not re.search(rf"mark [^(]*\b{re.escape(added)}\b[^(]*\(claimed\)", log)
    assert re.search(rf"mark [^(]*\b{re.escape(added)}\b[^(]*\(joined\): seen ALIVE in "
                     r"Ray$", log, re.MULTILINE), log[-4000:]


def test_a_failed_up_releases_the_worker_it_did_not_start(head: Head, tmp_path) -> None:
    head.ray(KILL_ACTORS, "8")
    head.wait("every worker retired", lambda: head.workers_alive() == set(), timeout=300)
    head.wait("every machine spare",
              lambda: {m["state"] for m in head.status()["machines"]} == {"spare"}, timeout=120)
    failing, *others = head.pool.workers
    runs_before = {r["request_id"] for r in head.status()["recent_runs"]}
    source = yaml.safe_load(head.cluster.inventory.read_text())
    source["worker_setup_commands"] = [f"test ! -e {FAIL_MARK}"]
    inventory = tmp_path / "cluster.yml"
    inventory.write_text(yaml.safe_dump(source, sort_keys=False))
    cluster = Cluster(pool=head.pool, wheelhouse=head.cluster.wheelhouse, inventory=inventory)
    mark = ["docker", "exec", failing.container]
    subprocess.run([*mark, "touch", FAIL_MARK], check=True)
    try:
        since = head.now()
        result = cluster.playbook("up", "-e", "ray_up_workers=all",
                                  "-e", "head_agent_interval=1", "-e", "ray_start_timeout=600",
                                  check=False, timeout=2400)
    finally:
        subprocess.run([*mark, "rm", "-f", FAIL_MARK], check=True)
    counts = recap(result.stdout)
    assert result.returncode != 0 and counts[failing.ip]["failed"] == 1, result.stdout[-4000:]
    assert all(counts[m.ip]["failed"] == 0 for m in [*others, head.pool.head]), counts
    assert "End the claim, releasing the workers not brought ALIVE" in result.stdout

    def record() -> dict[str, Any]:
        return {m["ip"]: m for m in head.status()["machines"]}[failing.ip]
    head.wait(f"{failing.ip} released by up", lambda: record()["state"] == "spare"
              and record()["reason"].startswith("up (claim "), timeout=30)
    head.wait("up's claim ended and removed", lambda: not head.claim_file(), timeout=30)
    log = head.journal(since)
    for event in ("claimed", "claim_released"):  # joining under the claim, then released
        assert re.search(rf"mark [^(]*\b{re.escape(failing.ip)}\b[^(]*\({event}\)", log), \
            log[-4000:]
    assert head.workers_alive() == {m.ip for m in others}
    # Demand for one worker more than the cluster has: the released one is the only spare.
    # Without the release it would stay joining under the claim, and the agent would add
    # nothing for provision_timeout_s (600 s).
    cpus = sum(int(n["resources"].get("CPU", 0)) for n in head.cluster.nodes())
    head.ray(CREATE_ACTORS, str(cpus + 1))

    def adding() -> bool:
        status = head.status()
        return any(failing.ip in r["ips"] for r in status["running"] + status["recent_runs"]
                   if r["kind"] == "add" and r["request_id"] not in runs_before)
    head.wait(f"the agent adds {failing.ip}", adding, timeout=60)
    assert record()["failures"] == 0, record()
    head.wait(f"{failing.ip} ALIVE", lambda: failing.ip in head.workers_alive(), timeout=600)
    head.ray(KILL_ACTORS, str(cpus + 1))
