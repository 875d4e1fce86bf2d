"""The playbooks on the local test pool, for real: up, up again, check mode, retire, add,
a refused drain, a head restart, bad commands, down.

One cluster is converged once for the whole module (Ray from the host's wheelhouse: the
machines cannot reach a package index) and the tests run in file order on it; each test
leaves the cluster as it found it (head + every worker ALIVE) unless it says otherwise.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import AUTH_FILE, NODES_SCRIPT, RAY_ENV, UNIT, Cluster, recap
from tests.leaks import find_leaks
from tests.pool import pool as pools
from tests.pool.wheelhouse import ensure_wheelhouse

pytestmark = pytest.mark.pool

START_SCRIPT = "/etc/ray/start-ray.sh"
HEAD_KEY = "~/.ssh/onprem_ray_head_key"


def failed_only_on(result: subprocess.CompletedProcess[str], ip: str) -> str:
    """The run failed on `ip` and on no other host; the output from its failure on."""
    assert result.returncode != 0
    counts = recap(result.stdout)
    assert counts[ip]["failed"] == 1
    assert all(c["failed"] == 0 for other, c in counts.items() if other != ip), counts
    return result.stdout[result.stdout.index(f"fatal: [{ip}]"):]


@pytest.fixture(scope="module")
def cluster(pool: pools.Pool) -> Iterator[Cluster]:
    assert len(pool.workers) >= 3, "these tests need a head and 3 workers (POOL_MACHINES=4)"
    # The agent (on by default) would retire the idle workers of the pool's cluster file
    # (min_workers 0) while these tests of the playbooks expect every worker running; its own
    # tests are test_agent_install.py and the end-to-end tests.
    made = Cluster(pool=pool, wheelhouse=ensure_wheelhouse(),
                   extra=("-e", "head_agent_enabled=false"))
    started = time.monotonic()
    result = made.playbook("up", "-e", "ray_up_workers=all")
    print(f"\nfirst up (Ray installed from the wheelhouse): {time.monotonic() - started:.1f}s")
    assert all(r["failed"] == 0 for r in recap(result.stdout).values())
    yield made


def test_up_brings_the_head_and_every_worker_alive_in_ray(cluster: Cluster) -> None:
    nodes = cluster.nodes()
    assert {n["ip"] for n in nodes} == cluster.all_ips
    assert [n["ip"] for n in nodes if n["head"]] == [cluster.pool.head.ip]
    for node in nodes:
        assert node["resources"]["CPU"] >= 1, node
        assert node["resources"]["memory"] > 0, node


def test_ray_runs_under_systemd_as_its_own_user_enabled_at_boot(cluster: Cluster) -> None:
    for machine in cluster.pool.machines:
        unit = cluster.unit(machine)
        assert unit["ActiveState"] == "active", (machine.ip, unit)
        assert unit["UnitFileState"] == "enabled", (machine.ip, unit)
        owner = cluster.pool.ssh(machine, "ps", "-o", "user=", "-p", unit["MainPID"]).stdout
        assert owner.strip() == "ray", machine.ip


def test_the_token_is_one_per_cluster_mode_0600_and_required(cluster: Cluster) -> None:
    digests = set()
    for machine in cluster.pool.machines:
        stat = cluster.pool.ssh(machine, "sudo", "stat", "-c", "%a %U %G", AUTH_FILE).stdout
        assert stat.split() == ["600", "ray", "ray"], machine.ip
        digests.add(cluster.pool.ssh(machine, "sudo", "sha256sum", AUTH_FILE).stdout.split()[0])
    assert len(digests) == 1
    # Without the token the GCS refuses the client.
    refused = cluster.pool.ssh(cluster.pool.head, "sudo", "-u", "ray", "env",
                               "RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN=wrong",
                               "/opt/ray/venv/bin/python", "-c", NODES_SCRIPT, cluster.gcs,
                               check=False, timeout=90)
    assert refused.returncode != 0
    assert "Authentication" in refused.stderr or "InvalidAuthToken" in refused.stderr


def test_dashboard_and_client_listen_on_the_private_address_only(cluster: Cluster) -> None:
    head = cluster.pool.head
    listening = cluster.pool.ssh(head, "ss", "-Hltn").stdout
    local = [line.split()[3] for line in listening.splitlines()]
    for port in (8265, 10001):
        bound = [address for address in local if address.endswith(f":{port}")]
        assert f"{head.ip}:{port}" in bound, (port, bound)
        assert not [a for a in bound if a.startswith(("0.0.0.0:", "*:", "[::]:"))], (port, bound)


def test_up_again_changes_nothing_and_restarts_nothing(cluster: Cluster) -> None:
    before = {m.ip: cluster.unit(m) for m in cluster.pool.machines}
    started = time.monotonic()
    result = cluster.playbook("up", "-e", "ray_up_workers=all")
    print(f"\nsecond up: {time.monotonic() - started:.1f}s")
    counts = recap(result.stdout)
    assert set(counts) == cluster.all_ips
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()), counts
    after = {m.ip: cluster.unit(m) for m in cluster.pool.machines}
    assert after == before


def test_check_diff_on_the_converged_cluster_changes_nothing(cluster: Cluster) -> None:
    before = {m.ip: cluster.unit(m) for m in cluster.pool.machines}
    result = cluster.playbook("up", "-e", "ray_up_workers=all", "--check", "--diff")
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in recap(result.stdout).values())
    assert {m.ip: cluster.unit(m) for m in cluster.pool.machines} == before
    assert cluster.alive_ips() == cluster.all_ips


def test_check_diff_shows_a_changed_setting_and_changes_nothing(cluster: Cluster) -> None:
    """--check --diff with another object store size: every node shows its start script's
    diff (the flag added) and the restart it would do; no file changes, nothing restarts."""
    before = {m.ip: cluster.unit(m) for m in cluster.pool.machines}
    scripts = {m.ip: cluster.pool.ssh(m, "sudo", "cat", START_SCRIPT).stdout
               for m in cluster.pool.machines}
    result = cluster.playbook("up", "-e", "ray_up_workers=all", "-e",
                              json.dumps({"ray_object_store_memory": 200_000_000}),
                              "--check", "--diff")
    counts = recap(result.stdout)
    assert set(counts) == cluster.all_ips
    assert all(c["changed"] > 0 and c["failed"] == 0 for c in counts.values()), counts
    assert result.stdout.count(f"--- before: {START_SCRIPT}") == len(cluster.all_ips)
    added = [line for line in result.stdout.splitlines()
             if line.startswith("+exec ") and "--object-store-memory=200000000" in line]
    assert {ip for ip in cluster.all_ips if any(f"={ip} " in line for line in added)} \
        == cluster.all_ips, added
    assert "RUNNING HANDLER [onprem.ray.ray : Restart Ray]" in result.stdout
    assert {m.ip: cluster.pool.ssh(m, "sudo", "cat", START_SCRIPT).stdout
            for m in cluster.pool.machines} == scripts
    assert {m.ip: cluster.unit(m) for m in cluster.pool.machines} == before


def test_a_running_worker_disabled_at_boot_is_enabled_again_without_a_restart(
        cluster: Cluster) -> None:
    worker = cluster.pool.workers[2]
    before = cluster.unit(worker)
    cluster.pool.ssh(worker, "sudo", "systemctl", "disable", UNIT)
    assert cluster.unit(worker)["UnitFileState"] == "disabled"
    counts = recap(cluster.playbook("up", "-e", "ray_up_workers=all").stdout)
    assert counts[worker.ip]["changed"] == 1, counts
    assert cluster.unit(worker) == before  # enabled again, same process


def leftovers(cluster: Cluster, machine: pools.Machine) -> str:
    """The files Ansible's runs left in the remote temporary directories of `machine` (the
    login user's, and root's for `become`), concatenated: empty when they cleaned up."""
    found = cluster.pool.ssh(machine, "sudo", "sh", "-c",
                             f"find ~{pools.SSH_USER}/.ansible/tmp /root/.ansible/tmp -type f "
                             "-exec cat {} + 2>/dev/null; true")
    assert found.returncode == 0, found.stderr
    return found.stdout


def test_secrets_never_reach_the_output_even_at_vvv(cluster: Cluster, tmp_path: Path) -> None:
    """The worker's token copy and the head's own key to the workers are made again, at -vvv;
    neither secret is in the output, Ansible's log of the run, its local temporary files, or
    the remote ones it left, in any form (raw, JSON-escaped, base64 at every alignment as
    slurp returns a file, a key's lines)."""
    head, worker = cluster.pool.head, cluster.pool.workers[0]
    token = cluster.pool.ssh(head, "sudo", "cat", AUTH_FILE).stdout.strip()

    def key() -> str:
        return cluster.pool.ssh(head, "sh", "-c", f"cat {HEAD_KEY}").stdout

    old_key = key()
    assert len(token) == 64 and "PRIVATE KEY" in old_key
    cluster.pool.ssh(worker, "sudo", "rm", AUTH_FILE)
    cluster.pool.ssh(head, "sh", "-c", f"rm {HEAD_KEY} {HEAD_KEY}.pub ~/.ray/auth_token")
    log, local_tmp = tmp_path / "ansible.log", tmp_path / "local-tmp"
    result = cluster.playbook("up", "-e", "ray_up_workers=all", "-vvv", "--diff",
                              env={"ANSIBLE_LOG_PATH": str(log),
                                   "ANSIBLE_LOCAL_TEMP": str(local_tmp)})
    new_key = key()
    assert "PRIVATE KEY" in new_key and new_key != old_key
    secrets = {"token": token, "the head's new key": new_key, "the head's old key": old_key}
    local = [path for path in local_tmp.rglob("*") if path.is_file()]
    texts = {"output": result.stdout + result.stderr,
             "log": log.read_text(errors="replace"),
             "local temporary files": "".join(p.read_text(errors="replace") for p in local),
             **{f"remote temporary files of {m.ip}": leftovers(cluster, m)
                for m in (head, worker)}}
    # At -vvv the output and the log show each connection, module arguments and results.
    assert "ESTABLISH SSH CONNECTION" in texts["output"], texts["output"][-2000:]
    assert "PLAY RECAP" in texts["log"] and "ESTABLISH SSH CONNECTION" in texts["log"]
    leaks = {name: find_leaks(text, secrets) for name, text in texts.items()}
    assert leaks == {name: [] for name in texts}, leaks
    counts = recap(result.stdout)
    assert counts[worker.ip]["changed"] > 0 and counts[head.ip]["changed"] > 0, counts
    assert cluster.pool.ssh(worker, "sudo", "cat", AUTH_FILE).stdout.strip() == token
    assert cluster.pool.ssh(head, "sh", "-c", f"stat -c %a {HEAD_KEY}").stdout.strip() == "600"
    cluster.wait_alive(cluster.all_ips)


def test_a_failed_write_of_secret_files_names_host_step_and_cause(cluster: Cluster) -> None:
    """The files step's module (which hides secret contents itself, not by no_log) reports a
    failure on a worker with the host, the step and the path."""
    worker = cluster.pool.workers[1]
    before = {m.ip: cluster.unit(m) for m in cluster.pool.machines}
    # A directory where the start script goes: it cannot be written.
    cluster.pool.ssh(worker, "sudo", "sh", "-c",
                     f"mv {START_SCRIPT} {START_SCRIPT}.kept && mkdir {START_SCRIPT}")
    try:
        result = cluster.playbook("up", "-e", "ray_up_workers=all", check=False)
    finally:
        cluster.pool.ssh(worker, "sudo", "sh", "-c",
                         f"rmdir {START_SCRIPT} && mv {START_SCRIPT}.kept {START_SCRIPT}")
    failure = failed_only_on(result, worker.ip)
    step = result.stdout[:result.stdout.index(f"fatal: [{worker.ip}]")].rsplit("TASK [", 1)[1]
    assert step.startswith("onprem.ray.ray : Ray | configuration directory, start script"), step
    assert f"{START_SCRIPT}: is a directory" in failure, failure[:2000]
    assert {m.ip: cluster.unit(m) for m in cluster.pool.machines} == before
    counts = recap(cluster.playbook("up", "-e", "ray_up_workers=all").stdout)
    assert all(c["changed"] == 0 for c in counts.values()), counts
    assert cluster.alive_ips() == cluster.all_ips


def test_preflight_names_the_host_and_what_to_install(cluster: Cluster) -> None:
    """A worker without rsync (the wheelhouse is pushed with it) fails preflight with its name
    and the package to install; nothing is changed or stopped anywhere."""
    worker = cluster.pool.workers[1]
    before = {m.ip: cluster.unit(m) for m in cluster.pool.machines}
    cluster.pool.ssh(worker, "sudo", "mv", "/usr/bin/rsync", "/usr/bin/rsync.hidden")
    try:
        result = cluster.playbook("up", "-e", "ray_up_workers=all", check=False)
    finally:
        cluster.pool.ssh(worker, "sudo", "mv", "/usr/bin/rsync.hidden", "/usr/bin/rsync")
    failure = " ".join(failed_only_on(result, worker.ip).split())  # YAML output folds lines
    step = result.stdout[:result.stdout.index(f"fatal: [{worker.ip}]")].rsplit("TASK [", 1)[1]
    assert step.startswith("onprem.ray.ray : Preflight | check the machine has what"), step
    assert f"{worker.ip}: missing on this machine" in failure, failure[:2000]
    assert "rsync" in failure and "apt-get install" in failure
    counts = recap(result.stdout)
    assert all(c["changed"] == 0 for c in counts.values()), counts
    assert {m.ip: cluster.unit(m) for m in cluster.pool.machines} == before


def test_add_workers_refuses_to_run_without_a_limit(cluster: Cluster) -> None:
    result = cluster.playbook("add_workers", check=False)
    assert result.returncode != 0
    assert "refusing to run on every worker" in result.stdout


def test_add_and_retire_refuse_the_head(cluster: Cluster) -> None:
    for name in ("add_workers", "retire_workers"):
        result = cluster.playbook(name, "--limit", cluster.pool.head.ip, check=False)
        assert result.returncode != 0, name
        assert "not workers of the pool" in result.stdout, name
    assert cluster.unit(cluster.pool.head)["ActiveState"] == "active"


def test_retire_drains_one_worker_and_add_brings_it_back(cluster: Cluster) -> None:
    leaving = cluster.pool.workers[-1]
    others = [m for m in cluster.pool.machines if m is not leaving]
    before = {m.ip: cluster.unit(m) for m in others}
    cluster.playbook("retire_workers", "--limit", leaving.ip)
    assert cluster.alive_ips() == {m.ip for m in others}
    unit = cluster.unit(leaving)
    assert (unit["ActiveState"], unit["UnitFileState"]) == ("inactive", "disabled"), unit
    assert {m.ip: cluster.unit(m) for m in others} == before
    cluster.playbook("add_workers", "--limit", leaving.ip)
    assert cluster.alive_ips() == cluster.all_ips
    assert cluster.unit(leaving)["UnitFileState"] == "enabled"


def test_the_head_runs_retire_and_add_itself_as_the_agent_will(cluster: Cluster) -> None:
    """The agent acts from the head: with its unit's environment (Ansible's settings, the
    collection copied there, Ray's venv with ansible-core) and the head's copy of the cluster
    file, the login user retires and adds a worker over SSH with verified host keys."""
    head = cluster.pool.head
    unit = cluster.pool.ssh(head, "systemctl", "show", "onprem-ray-agent.service",
                            "--property", "Environment").stdout.strip()
    environment = unit.removeprefix("Environment=").split()
    assert any(e.startswith("ANSIBLE_CONFIG=") for e in environment), unit
    worker = cluster.pool.workers[0]
    for name in ("retire_workers", "add_workers"):
        result = cluster.pool.ssh(
            head, "env", *environment, "ansible-playbook", "-i",
            "/etc/onprem-ray/cluster.yml", f"onprem.ray.{name}", "--limit", worker.ip,
            check=False, timeout=600)
        assert result.returncode == 0, f"{name} on the head:\n{result.stdout[-5000:]}"
        assert recap(result.stdout)[worker.ip]["failed"] == 0
        if name == "retire_workers":
            assert worker.ip not in cluster.alive_ips()
    cluster.wait_alive(cluster.all_ips, timeout=60)


def test_a_refused_drain_leaves_the_worker_running_and_says_why(cluster: Cluster) -> None:
    busy = cluster.pool.workers[0]
    # A task that holds a slot on `busy` for a while, driven from the head.
    job = ("import ray, time; ray.init(address='auto'); "
           f"ray.get(ray.remote(lambda: time.sleep(90)).options("
           f"resources={{'node:{busy.ip}': 0.01}}).remote())")
    driver = cluster.pool.ssh(cluster.pool.head, "sh", "-c",
                              " ".join(RAY_ENV) + " nohup /opt/ray/venv/bin/python -c "
                              + shlex.quote(job) + " >/tmp/busy-job.log 2>&1 & echo $!")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the task runs on `busy`
            status = cluster.pool.ssh(cluster.pool.head, *RAY_ENV, "/opt/ray/venv/bin/ray",
                                      "status", "--address", cluster.gcs, check=False).stdout
            if re.search(r"\b[1-9]\d*(\.\d+)?/\d+(\.\d+)? CPU", status):
                break
            time.sleep(2)
        result = cluster.playbook("retire_workers", "--limit", busy.ip, check=False)
        assert result.returncode != 0
        assert "Ray refused to drain" in result.stdout and busy.ip in result.stdout
        assert "keeps running" in result.stdout
        assert cluster.unit(busy)["ActiveState"] == "active"
        assert busy.ip in cluster.alive_ips()
    finally:
        cluster.pool.ssh(cluster.pool.head, "sudo", "kill", driver.stdout.strip(), check=False)
    cluster.wait_alive(cluster.all_ips)


def test_workers_rejoin_by_themselves_after_the_head_restarts(cluster: Cluster) -> None:
    cluster.pool.ssh(cluster.pool.head, "sudo", "systemctl", "restart", UNIT, timeout=120)
    cluster.wait_alive(cluster.all_ips, timeout=300)


def test_a_failing_setup_command_names_host_step_and_output_and_stops_nothing(
        cluster: Cluster) -> None:
    bad = cluster.pool.workers[1]
    before = {m.ip: cluster.unit(m) for m in cluster.pool.machines}
    commands = json.dumps({"ray_setup_commands": [
        "echo preparing on $(hostname)",
        f"if [ \"$(hostname -I | tr -d ' ')\" = {bad.ip} ]; then echo disk full >&2; exit 3; fi",
    ]})
    result = cluster.playbook("up", "-e", "ray_up_workers=all", "-e", commands, check=False)
    failure = failed_only_on(result, bad.ip)
    assert "Commands | run setup_commands" in result.stdout
    assert "disk full" in failure and "command failed with exit code 3" in failure
    assert {m.ip: cluster.unit(m) for m in cluster.pool.machines} == before
    # Without the bad command: the healthy hosts ran the list once (changed=0 now), the host
    # that failed runs it again, and nothing restarts.
    good = json.dumps({"ray_setup_commands": ["echo preparing on $(hostname)"]})
    counts = recap(cluster.playbook("up", "-e", "ray_up_workers=all", "-e", good).stdout)
    assert counts[bad.ip]["changed"] > 0
    counts = recap(cluster.playbook("up", "-e", "ray_up_workers=all", "-e", good).stdout)
    assert all(c["changed"] == 0 for c in counts.values()), counts
    assert {m.ip: cluster.unit(m) for m in cluster.pool.machines} == before
    # Leave the cluster as the other tests expect it: no setup commands.
    cluster.playbook("up", "-e", "ray_up_workers=all")


def test_an_unreachable_worker_is_reported_and_the_others_converge(
        cluster: Cluster, tmp_path: Path) -> None:
    missing = str(ipaddress.ip_network(cluster.pool.subnet).network_address + 99)
    source = cluster.pool.inventory.read_text()
    inventory = tmp_path / "cluster.yml"
    inventory.write_text(source.replace("  worker_ips:\n", f"  worker_ips:\n    - {missing}\n", 1))
    before = {m.ip: cluster.unit(m) for m in cluster.pool.machines}
    broken = Cluster(pool=cluster.pool, wheelhouse=cluster.wheelhouse, inventory=inventory,
                     extra=cluster.extra)
    result = broken.playbook("up", "-e", "ray_up_workers=all", check=False)
    assert result.returncode != 0
    counts = recap(result.stdout)
    assert counts[missing]["unreachable"] == 1, counts
    # The others converge (only the head's copy of the cluster file changes: it now lists one
    # more worker) and nothing restarts.
    assert all(c["failed"] == 0 and c["unreachable"] == 0
               for ip, c in counts.items() if ip != missing), counts
    assert all(c["changed"] == 0 for ip, c in counts.items()
               if ip not in (missing, cluster.pool.head.ip)), counts
    assert f"[{missing}]" in result.stdout and "Preflight | probe the machine" in result.stdout
    assert {m.ip: cluster.unit(m) for m in cluster.pool.machines} == before


def test_an_unreachable_head_is_named_by_the_workers_and_nothing_changes(
        cluster: Cluster, tmp_path: Path) -> None:
    # add_workers (the agent's playbook) reaches the head only through the workers' probe of it.
    missing = str(ipaddress.ip_network(cluster.pool.subnet).network_address + 98)
    source = cluster.pool.inventory.read_text()
    inventory = tmp_path / "cluster.yml"
    inventory.write_text(source.replace(f"head_ip: {cluster.pool.head.ip}", f"head_ip: {missing}"))
    assert inventory.read_text() != source
    workers = cluster.pool.workers[:2]
    before = {m.ip: cluster.unit(m) for m in cluster.pool.machines}
    broken = Cluster(pool=cluster.pool, wheelhouse=cluster.wheelhouse, inventory=inventory,
                     extra=cluster.extra)
    result = broken.playbook("add_workers", "--limit", ",".join(w.ip for w in workers),
                             check=False)
    assert result.returncode != 0
    counts = recap(result.stdout)
    assert set(counts) == {w.ip for w in workers}, counts
    assert all(c["changed"] == 0 for c in counts.values()), counts
    # Ansible stops the play at a run_once task whose host is unreachable: the first worker
    # reports it, with the head's address and SSH's reason.
    failure = result.stdout[result.stdout.index("Preflight | probe the head"):]
    assert f"fatal: [{workers[0].ip} -> {missing}]: UNREACHABLE!" in failure
    assert f"connect to host {missing} port 22" in failure
    assert {m.ip: cluster.unit(m) for m in cluster.pool.machines} == before
    assert cluster.alive_ips() == cluster.all_ips


def test_a_wrong_key_is_reported_and_nothing_running_is_stopped(
        cluster: Cluster, tmp_path: Path) -> None:
    worker = cluster.pool.workers[0]
    wrong = tmp_path / "wrong_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    before = {m.ip: cluster.unit(m) for m in cluster.pool.machines}
    # Fresh SSH connections: a ControlPersist master of an earlier run would not ask for a key.
    result = cluster.playbook("add_workers", "--limit", worker.ip,
                              "-e", f"ansible_ssh_private_key_file={wrong}", check=False,
                              env={"ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path / "cp")})
    assert result.returncode != 0
    assert recap(result.stdout)[worker.ip]["unreachable"] == 1
    assert "Permission denied" in result.stdout
    assert {m.ip: cluster.unit(m) for m in cluster.pool.machines} == before
    assert cluster.alive_ips() == cluster.all_ips


def test_down_stops_ray_everywhere_and_leaves_no_units(cluster: Cluster) -> None:
    cluster.playbook("down")
    for machine in cluster.pool.machines:
        leftover = cluster.pool.ssh(
            machine, "sh", "-c",
            "systemctl list-unit-files 'onprem-ray*' --no-legend; "
            "ls /etc/systemd/system | grep onprem; ls -d /etc/ray /var/lib/onprem-ray; "
            "ls /etc/profile.d /usr/local/bin | grep onprem; pgrep -u ray -f raylet",
            check=False).stdout
        assert leftover.strip() == "", (machine.ip, leftover)
    # What a later `up` reuses stays (ray_remove_install=true removes it): the agent installed
    # in Ray's venv with its wheel, and the head's own key pair, still authorized on the workers.
    kept = cluster.pool.ssh(
        cluster.pool.head, "sh", "-c",
        f"ls /opt/ray/agent/installed-wheel.sha256 {HEAD_KEY} {HEAD_KEY}.pub "
        "&& /opt/ray/venv/bin/python -c 'import onprem_ray_agent'", check=False)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    head, worker = cluster.pool.head, cluster.pool.workers[0]
    public = cluster.pool.ssh(head, "sh", "-c", f"cat {HEAD_KEY}.pub").stdout.split()[1]
    assert public in cluster.pool.ssh(worker, "cat", ".ssh/authorized_keys").stdout
