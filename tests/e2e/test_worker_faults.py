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

import subprocess
import time
from collections.abc import Iterator

import pytest
import yaml

from tests.cluster import UNIT, forget_agent, stop_workers
from tests.faulty import HEAD_CLUSTER_FILE, KILL, Faulty, chaos, ssh_established, subprocess_quiet
from tests.pool import pool as pools
from tests.pool.wheelhouse import ensure_wheelhouse

pytestmark = [pytest.mark.pool, pytest.mark.e2e]

WORKER_CPUS = 2
IDLE_S = 10.0
PROVISION_TIMEOUT_S = 45
CUT_S = 30
QUARANTINE_AFTER = 3
SETTINGS = {**chaos.AGENT_SETTINGS, "head_agent_provision_timeout": str(PROVISION_TIMEOUT_S),
            "head_agent_quarantine_after": str(QUARANTINE_AFTER)}


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
    yield Faulty(chaos=made, worker_cpus=WORKER_CPUS, fast=fast, slow=slow)
    for machine in pool.workers:  # a test that failed midway may leave one cut off or down
        subprocess_quiet(["docker", "start", machine.container])
        subprocess_quiet(["docker", "network", "connect", "--ip", machine.ip, pool.network,
                          machine.container])
    made.ray(KILL, "cut-add", "hung", "served", "job", "steady", "swapped")
    chaos.release(made)


def test_a_worker_cut_off_during_an_add_past_the_provision_timeout_fails_and_another_serves(
        faulty: Faulty) -> None:
    """Fault: the machine an add is setting up is cut off the network (docker network
    disconnect) just after the playbook connected to it, for longer than provision_timeout_s.
    Expected: the add run stops: at its time limit, the machine failed with a reason naming
    provision_timeout_s, when the cut caught a command on the open connection (the usual case);
    or, when it caught ssh opening a new connection, after ssh's connect timeout, the machine
    failed as unreachable over SSH. Another spare of its type serves the demand; once
    reconnected, nothing is lost."""
    faulty.create("cut-add", selector={"tier": "fast"})
    run = faulty.wait("an add run", lambda: next(iter(faulty.add_runs()), None), timeout=120)
    assert len(run["ips"]) == 1 and run["ips"][0] in faulty.fast, run
    cut = run["ips"][0]
    ssh_established(faulty, cut, timeout=60)
    pools.disconnect(faulty.pool, faulty.machine(cut))
    try:
        faulty.wait(f"{cut} failed", lambda: faulty.record(cut)["state"] == "failed",
                    timeout=PROVISION_TIMEOUT_S + 120)
        record, outcome = faulty.record(cut), faulty.outcome(run["request_id"])
        timed_out = "provision_timeout_s" in record["reason"] and outcome == "timeout"
        unreachable = record["reason"].startswith("unreachable over SSH")
        assert timed_out or unreachable, (record, outcome)
        print(f"\nthe add cut off ended {outcome}: {record['reason']}")
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


def test_a_machine_swapped_behind_a_known_address_is_refused_then_quarantined(
        faulty: Faulty) -> None:
    """Fault: the slow machine answers with new SSH host keys (made anew, sshd restarted, its
    SSH sessions ended: a replaced machine takes them along), as another machine behind its
    address would; then demand for tier=slow, which only it can serve.
    Expected: each add of it ends with the machine failed, "SSH host key changed for <ip>" and
    what to do as its reason; nothing is sent to it (its sshd sees the head's connections close
    before any login); after its backoff it is added again and fails the same way, and after
    quarantine_after_failures (3) it is quarantined with a reason quoting that error; no other
    machine is in a run meanwhile. Then the operator's fix: the old key removed from the
    known_hosts the head's agent uses (ssh-keygen -R), the controller given the new key
    (checked over a channel it trusts), and `up` with ray_up_workers=all, which records the
    new key on the head and starts Ray there; the agent adopts the quarantined machine Ray
    lists ALIVE (nothing else releases a quarantined machine), the demand is served, and
    nothing is lost."""
    ip, slow = faulty.slow, faulty.machine(faulty.slow)
    # Settled, and still 15 s later: a Ray unit an earlier fault left running or restarting
    # (its machine recorded spare) would join, be adopted and retired during this test.
    for what in ("every worker spare, its Ray unit stopped and not in Ray, no run under way",
                 "the same 15 s later"):
        faulty.wait(what, lambda: settled(faulty), timeout=300)
        time.sleep(15)
    fast_before = {a: (faulty.record(a)["state"], faulty.record(a)["since"])
                   for a in faulty.fast}
    old_key = pools.host_key_line(slow)
    since = faulty.now()
    try:
        swap_host_keys(slow)
        assert pools.host_key_line(slow) != old_key
        faulty.wait(f"no SSH session open on {ip}", lambda: not ssh_sessions(slow), timeout=60)
        faulty.create("swapped", selector={"tier": "slow"})
        faulty.wait(f"{ip} quarantined", lambda: faulty.record(ip)["state"] == "quarantined",
                    timeout=300)
        record = faulty.record(ip)
        assert record["reason"].startswith(f"{QUARANTINE_AFTER} consecutive failures; last "
                                           f"error: SSH host key changed for {ip} ("), record
        for told in ("nothing was sent to it", f"ssh-keygen -R {ip}", "run up"):
            assert told in record["reason"], record
        said = record["last_error"].partition("\nssh said: ")[2]
        assert "Host key verification failed" in said, record
        log = faulty.journal(since)
        refused = [line for line in log.splitlines()
                   if f"{ip} unreachable: SSH host key changed for {ip} (" in line]
        assert len(refused) == QUARANTINE_AFTER, log[-5000:]
        assert f"mark {ip} (quarantine)" in log, log[-5000:]
        assert len([line for line in log.splitlines()
                    if f"mark {ip} (backoff_elapsed)" in line]) == QUARANTINE_AFTER - 1, log
        runs = [(r["kind"], r["ips"], r["hosts"]) for r in faulty.status()["recent_runs"]
                if r["started"] >= since]
        assert runs == [("add", [ip], {ip: "unreachable"})] * QUARANTINE_AFTER, (runs, log)
        # Nothing was sent: the head's connections reached sshd and closed before any login.
        sshd = sshd_log(slow, since)
        assert "Accepted" not in sshd, sshd
        closed = [line for line in sshd.splitlines()
                  if f"closed by {faulty.chaos.head_ip} " in line and "[preauth]" in line]
        assert len(closed) >= QUARANTINE_AFTER, sshd
        assert {a: (faulty.record(a)["state"], faulty.record(a)["since"])
                for a in faulty.fast} == fast_before
        print(f"\n{ip}: {len(refused)} adds refused by ssh, {len(closed)} connections closed "
              "before login, quarantined: " + record["reason"].splitlines()[0][:200])

        # The operator's fix, as the reason says.
        known = head_known_hosts(faulty)
        removed = faulty.pool.ssh(faulty.pool.head, "ssh-keygen", "-R", ip, "-f", known)
        assert f"Host {ip} found" in removed.stdout + removed.stderr, removed
        pools.trust_host_key(faulty.pool, slow)
        again = faulty.now()
        agent = [arg for key, value in SETTINGS.items() for arg in ("-e", f"{key}={value}")]
        faulty.chaos.cluster.playbook("up", "-e", "ray_up_workers=all", *agent, timeout=1800)
        assert faulty.placed("swapped") == [ip]
        assert f"mark {ip} (joined): found ALIVE in Ray while recorded quarantined: adopted" \
            in faulty.journal(again)
        assert pools.host_key_line(slow).split()[1:] == faulty.ssh(
            "ssh-keygen", "-F", ip, "-f", known).split()[-2:]
    finally:
        restore_host_key(faulty, slow)
    faulty.assert_nothing_lost("swapped")
    assert faulty.record(ip)["failures"] == 0
    faulty.kill_actors("swapped")


def settled(faulty: Faulty) -> bool:
    """Every worker spare, with its Ray unit neither running nor restarting (asked over docker
    exec), none in Ray, and no run under way."""
    if set(faulty.states().values()) != {"spare"} or faulty.status()["running"]:
        return False
    for ip in [*faulty.fast, faulty.slow]:
        state = subprocess.run(["docker", "exec", faulty.machine(ip).container, "systemctl",
                                "is-active", UNIT], capture_output=True, text=True,
                               check=False, timeout=120).stdout.strip()
        if state in ("active", "activating", "reloading", "deactivating"):
            return False
    return not faulty.alive()


def ssh_sessions(machine: pools.Machine) -> str:
    """The SSH connections open on a machine (asked over docker exec, not SSH)."""
    return docker_exec(machine, "ss", "-Htn", "state", "established", "( sport = :22 )")


def swap_host_keys(machine: pools.Machine) -> None:
    """New host keys and a restarted sshd; its sessions from before (e.g. a task left running
    by a timed-out add, held open by the head's ControlPersist) end, as they would with the
    machine that was replaced: every sshd process but the new listener is stopped."""
    docker_exec(machine, "sh", "-c", "rm -f /etc/ssh/ssh_host_* && ssh-keygen -A "
                "&& systemctl restart ssh && listener=$(systemctl show -p MainPID --value ssh) "
                "&& for pid in $(pgrep -x sshd); do [ $pid = $listener ] || kill $pid || true; "
                "done")


def sshd_log(machine: pools.Machine, since: float) -> str:
    return docker_exec(machine, "journalctl", "-t", "sshd", "-o", "cat", "--no-pager",
                       "--since", f"@{since - 1:.0f}")


def restore_host_key(faulty: Faulty, machine: pools.Machine) -> None:
    """The machine's current host key known to the controller and to the head, whatever the
    test reached: the modules after this one reach it over SSH."""
    pools.trust_host_key(faulty.pool, machine)
    line = pools.host_key_line(machine)
    known = head_known_hosts(faulty)
    if line.strip() not in faulty.ssh("cat", known).splitlines():
        faulty.ssh("ssh-keygen", "-R", machine.ip, "-f", known)
        faulty.ssh("tee", "-a", known, stdin=line)


def head_known_hosts(faulty: Faulty) -> str:
    """The known_hosts file the head's agent checks host keys against (its cluster file's)."""
    return yaml.safe_load(faulty.ssh("cat", HEAD_CLUSTER_FILE))["auth"]["ssh_known_hosts_file"]


def docker_exec(machine: pools.Machine, *argv: str) -> str:
    result = subprocess.run(["docker", "exec", machine.container, *argv], capture_output=True,
                            text=True, check=False, timeout=120)
    assert result.returncode == 0, f"{argv}: {result.stderr}"
    return result.stdout
