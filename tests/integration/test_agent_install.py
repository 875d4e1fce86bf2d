"""The agent as `up` installs it, on the local pool, through the README's migration path: an
inventory source pointing at a Ray cluster YAML (inventories/ray-yaml/cluster.yml as is), and
no -e flags for the agent (it runs by default).

The tests run in file order, each from the state the one before left: the agent runs from the
onprem-ray wheel with the head's own key; `status` shows the pool; demand adds a worker; a
changed setting reloads it (same process), nothing changed changes nothing; an agent that
cannot start fails `up` with its own log lines.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.cluster import Cluster, recap
from tests.e2e.test_autoscaling import ALL, CREATE_ACTORS, KILL_ACTORS, Autoscaled
from tests.pool import pool as pools
from tests.pool.wheelhouse import ensure_wheelhouse

pytestmark = [pytest.mark.pool]

REPO = Path(__file__).resolve().parents[2]
UNIT = "onprem-ray-agent.service"
STATE_DIR = "/var/lib/onprem-ray/agent"
HEAD_KEY = "/home/ops/.ssh/onprem_ray_head_key"


@pytest.fixture(scope="module")
def migrated(pool: pools.Pool, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Autoscaled]:
    site = tmp_path_factory.mktemp("ray-yaml")
    shutil.copy(REPO / "inventories" / "ray-yaml" / "cluster.yml", site / "cluster.yml")
    ray_yaml = yaml.safe_load(pool.inventory.read_text())
    del ray_yaml["plugin"]
    ray_yaml.update(min_workers=0, max_workers=len(pool.workers), idle_timeout_minutes=0.25,
                    setup_commands=["mkdir -p ~/jobs"])
    (site / "ray-cluster.yaml").write_text(yaml.safe_dump(ray_yaml, sort_keys=False))
    cluster = Cluster(pool=pool, wheelhouse=ensure_wheelhouse(), inventory=site / "cluster.yml")
    for machine in pool.workers:  # start from no worker running
        pool.ssh(machine, "sudo", "systemctl", "disable", "--now", "onprem-ray.service",
                 check=False)
    # ... and from an agent that remembers nothing: earlier tests on this pool leave records
    # (failed adds, backoffs, other node types) that are theirs, not this module's.
    pool.ssh(pool.head, "sudo", "systemctl", "stop", UNIT, check=False)
    pool.ssh(pool.head, "sudo", "rm", "-f", f"{STATE_DIR}/state.db", f"{STATE_DIR}/state.db-wal",
             f"{STATE_DIR}/state.db-shm", check=False)
    result = cluster.playbook("up", "-e", "head_agent_interval=1")
    assert all(r["failed"] == 0 for r in recap(result.stdout).values())
    made = Autoscaled(cluster=cluster, unreachable="")
    yield made
    made.ray(KILL_ACTORS, *ALL, timeout=120)
    made.ssh("sudo", "systemctl", "disable", "--now", UNIT)


def handler_changed(output: str, name: str) -> bool:
    """Whether the head role's handler `name` changed something in this run's output (both
    handlers are notified by the agent's files step and skip what is not theirs)."""
    parts = output.split(f"RUNNING HANDLER [onprem.ray.head : {name}]")
    if len(parts) == 1:
        return False
    section = re.split(r"\n(?:TASK|RUNNING HANDLER|PLAY) \[", parts[1], maxsplit=1)[0]
    return "changed: [" in section


def main_pid(made: Autoscaled) -> str:
    return made.ssh("systemctl", "show", "--property=MainPID", "--value", UNIT).stdout.strip()


def test_the_agent_runs_from_the_wheel_with_the_heads_own_key(migrated: Autoscaled) -> None:
    assert migrated.ssh("systemctl", "is-active", UNIT).stdout.strip() == "active"
    shown = migrated.ssh("/opt/ray/venv/bin/pip", "show", "onprem-ray").stdout
    assert "Version: 0.1.0" in shown
    # No copied source trees: the agent and the collection are the installed distribution.
    found = migrated.ssh("sh", "-c", "ls /opt/ray/agent; ls /opt/ray/agent/collections/"
                         "ansible_collections").stdout.split()
    assert "onprem_ray_agent" not in found and "onprem" not in found, found
    assert "onprem_ray-0.1.0-py3-none-any.whl" in found and "ansible" in found, found
    # The head's files: the source as the operator wrote it, the Ray YAML with the head's paths.
    source = yaml.safe_load(migrated.ssh("cat", "/etc/onprem-ray/cluster.yml").stdout)
    assert source == {"plugin": "onprem.ray.cluster", "ray_cluster_yaml": "ray-cluster.yaml"}
    ray_yaml = yaml.safe_load(migrated.ssh("cat", "/etc/onprem-ray/ray-cluster.yaml").stdout)
    assert ray_yaml["auth"]["ssh_private_key"] == HEAD_KEY
    # The head's key is its own (not the operator's), and the workers authorize it.
    public = migrated.ssh("cat", HEAD_KEY + ".pub").stdout.split()[1]
    operator = Path(migrated.cluster.pool.private_key).with_suffix(".pub")
    if operator.is_file():
        assert operator.read_text().split()[1] != public
    pool = migrated.cluster.pool
    for machine in pool.workers:
        keys = pool.ssh(machine, "cat", "/home/ops/.ssh/authorized_keys").stdout
        assert public in keys, machine.ip
    # The head reaches a worker with it, host key verified.
    worker = pool.workers[0].ip
    reached = migrated.ssh("ssh", "-i", HEAD_KEY, "-o", "BatchMode=yes",
                           "-o", "StrictHostKeyChecking=yes", f"ops@{worker}", "hostname -I")
    assert worker in reached.stdout.split()
    settings = yaml.safe_load(migrated.ssh("cat", "/etc/onprem-ray/agent.yml").stdout)
    assert settings["interval_s"] == 1.0 and settings["provision_timeout_s"] == 600.0


def test_status_shows_the_pool(migrated: Autoscaled) -> None:
    workers = {m.ip for m in migrated.cluster.pool.workers}
    migrated.wait("every worker admitted", lambda: set(migrated.states()) == workers,
                  timeout=60)
    assert set(migrated.states().values()) == {"spare"}
    shown = migrated.ssh("onprem-ray-agent", "status", "--state-dir",
                         "/var/lib/onprem-ray/agent").stdout
    for ip in workers:
        assert ip in shown, shown


def test_demand_adds_a_worker(migrated: Autoscaled) -> None:
    migrated.ray(CREATE_ACTORS, "3")  # the head has 2 CPUs: one actor waits
    migrated.wait("one worker ALIVE", lambda: len(migrated.workers_alive()) == 1, timeout=300)
    (added,) = migrated.workers_alive()
    assert migrated.states()[added] == "active"
    migrated.ray(KILL_ACTORS, *ALL)


def test_a_changed_setting_reloads_the_agent_and_nothing_changed_changes_nothing(
        migrated: Autoscaled) -> None:
    before = main_pid(migrated)
    result = migrated.cluster.playbook("up", "-e", "head_agent_interval=1",
                                       "-e", "head_agent_provision_timeout=300")
    assert "RUNNING HANDLER [onprem.ray.head : Reload the agent]" in result.stdout
    assert not handler_changed(result.stdout, "Restart the agent")
    assert main_pid(migrated) == before
    settings = yaml.safe_load(migrated.ssh("cat", "/etc/onprem-ray/agent.yml").stdout)
    assert settings["provision_timeout_s"] == 300.0
    migrated.wait("the settings read again",
                  lambda: "settings /etc/onprem-ray/agent.yml too" in migrated.journal(),
                  timeout=30)
    again = migrated.cluster.playbook("up", "-e", "head_agent_interval=1",
                                      "-e", "head_agent_provision_timeout=300")
    head = migrated.head.ip
    assert recap(again.stdout)[head]["changed"] == 0, again.stdout[-4000:]
    assert main_pid(migrated) == before


def test_an_agent_that_cannot_start_fails_up_with_its_own_log(migrated: Autoscaled) -> None:
    """Its metrics port taken (sshd's): the agent exits before it is ready, and `up` fails
    the head with the agent's reason; the next `up` with the port free brings it back."""
    failed = migrated.cluster.playbook("up", "-e", "head_agent_interval=1",
                                       "-e", "head_agent_metrics_port=22", check=False)
    assert failed.returncode != 0
    assert recap(failed.stdout)[migrated.head.ip]["failed"] == 1
    assert "the agent (onprem-ray-agent.service) is" in failed.stdout
    assert "Address already in use" in failed.stdout, failed.stdout[-4000:]
    migrated.cluster.playbook("up", "-e", "head_agent_interval=1")
    assert migrated.ssh("systemctl", "is-active", UNIT).stdout.strip() == "active"
    status = json.loads(migrated.ssh("onprem-ray-agent", "status", "--state-dir",
                                     "/var/lib/onprem-ray/agent", "--json", "--no-decide").stdout)
    assert status["machines"], status
