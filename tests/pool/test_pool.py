"""The pool itself: the machines every later test stands on must be what they claim."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from tests.pool import pool as pools

pytestmark = pytest.mark.pool


def test_ssh_reaches_every_machine_with_host_key_verification(pool: pools.Pool) -> None:
    for machine in pool.machines:
        result = pool.ssh(machine, "hostname")
        assert result.stdout.strip() == machine.name
    config = pool.ssh_config.read_text()
    assert "StrictHostKeyChecking yes" in config
    assert len(pool.known_hosts.read_text().splitlines()) == len(pool.machines)


def test_a_wrong_host_key_is_refused(pool: pools.Pool, tmp_path) -> None:
    machine = pool.workers[0]
    other = pool.head
    lines = pool.known_hosts.read_text().splitlines()
    other_key = next(line for line in lines if line.startswith(f"{other.ip} "))
    forged = tmp_path / "known_hosts"
    forged.write_text(other_key.replace(other.ip, machine.ip, 1) + "\n")
    result = subprocess.run(
        ["ssh", "-F", str(pool.ssh_config), "-o", f"UserKnownHostsFile={forged}",
         f"ops@{machine.ip}", "true"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 255
    assert "HOST IDENTIFICATION HAS CHANGED" in result.stderr or "verification failed" in \
        result.stderr


def test_every_machine_has_its_own_host_key(pool: pools.Pool) -> None:
    keys = [line.split()[2] for line in pool.known_hosts.read_text().splitlines()]
    assert len(set(keys)) == len(pool.machines)


def test_systemd_is_running_on_every_machine(pool: pools.Pool) -> None:
    for machine in pool.machines:
        assert pool.ssh(machine, "systemctl", "is-system-running").stdout.strip() == "running"
        assert pool.ssh(machine, "cat", "/proc/1/comm").stdout.strip() == "systemd"


def test_login_user_has_passwordless_sudo_and_python(pool: pools.Pool) -> None:
    for machine in pool.machines:
        assert pool.ssh(machine, "sudo", "-n", "id", "-u").stdout.strip() == "0"
        assert pool.ssh(machine, "python3", "-c", "import venv; print('ok')").stdout == "ok\n"


def test_machines_do_not_see_each_others_files(pool: pools.Pool) -> None:
    marker = f"/tmp/onprem-ray-marker-{uuid.uuid4().hex}"
    first, second = pool.machines[0], pool.machines[1]
    pool.ssh(first, "touch", marker)
    assert pool.ssh(first, "test", "-e", marker, check=False).returncode == 0
    assert pool.ssh(second, "test", "-e", marker, check=False).returncode == 1


def test_machines_reach_each_other_on_the_pool_network(pool: pools.Pool) -> None:
    result = pool.ssh(pool.workers[0], "python3", "-c",
                      f"import socket; socket.create_connection(('{pool.head.ip}', 22), 5)")
    assert result.returncode == 0


def test_inventory_names_the_pool(pool: pools.Pool) -> None:
    text = pool.inventory.read_text()
    assert "plugin: onprem.ray.cluster" in text
    assert f"head_ip: {pool.head.ip}" in text
    for worker in pool.workers:
        assert f"- {worker.ip}" in text
