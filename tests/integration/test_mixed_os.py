"""Machines of two Debian releases in one pool: Debian 12 (Python 3.11) and Debian 13 (3.13).

Ray runs a cluster on one Python: a node whose Python differs from the head's is refused by
Ray itself when it starts (a crash loop, reported only after the wait times out). Preflight
refuses such a worker by name first, as it refuses a worker that would get another Ray than the
head's. A Debian 13 cluster is told which part of the wheelhouse it lacks and the command that
builds it; once built, it comes up on its own Python.

The pool (head of cluster A: Debian 12; head of cluster B and the workers: Debian 13) is this
module's own; it needs the Debian 13 node image (built on first use, about 100 s).
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import NODES_SCRIPT, RAY_ENV, Cluster, recap
from tests.conftest import POOL_NAME
from tests.pool import pool as pools
from tests.pool.wheelhouse import ensure_wheelhouse

pytestmark = pytest.mark.pool

VERSION_SCRIPT = "import ray, sys; print(ray.__version__, '.'.join(map(str, sys.version_info[:3])))"


@pytest.fixture(scope="module")
def pool() -> Iterator[pools.Pool]:
    name = f"{POOL_NAME}-mixed"
    pools.remove(name)
    made = pools.create(name, machines=3, suites=["bookworm", "trixie", "trixie"])
    yield made
    pools.remove(name)


def cluster_of(pool: pools.Pool, head: pools.Machine, workers: list[pools.Machine],
               wheelhouse: Path, directory: Path) -> Cluster:
    """A cluster of some of the pool's machines, with a cluster file of its own."""
    directory.mkdir()
    inventory = directory / "cluster.yml"
    worker_ips = ", ".join(m.ip for m in workers)
    inventory.write_text(textwrap.dedent(f"""\
        plugin: onprem.ray.cluster
        cluster_name: {directory.name}
        provider: {{type: local, head_ip: {head.ip}, worker_ips: [{worker_ips}]}}
        auth:
          ssh_user: ops
          ssh_private_key: {pool.private_key}
          ssh_known_hosts_file: {pool.known_hosts}
        """))
    machines = [dataclasses.replace(head, role="head")]
    machines += [dataclasses.replace(m, role="worker") for m in workers]
    view = dataclasses.replace(pool, machines=machines)
    return Cluster(pool=view, wheelhouse=wheelhouse, inventory=inventory,
                   extra=("-e", "head_agent_enabled=false", "-e", "ray_up_workers=all"))


def one_line(output: str) -> str:
    """The playbook's output with YAML's folded lines joined again."""
    return " ".join(output.split())


def versions(cluster: Cluster, machine: pools.Machine) -> tuple[str, str]:
    """(Ray's version, the venv's Python version) on `machine`."""
    out = cluster.pool.ssh(machine, "/opt/ray/venv/bin/python", "-c", VERSION_SCRIPT).stdout
    ray_version, python = out.split()
    return ray_version, python


def os_python(cluster: Cluster, machine: pools.Machine) -> str:
    return cluster.pool.ssh(machine, "/usr/bin/python3", "-c",
                            "import platform; print(platform.python_version())").stdout.strip()


def alive(cluster: Cluster) -> set[str]:
    out = cluster.pool.ssh(cluster.pool.head, *RAY_ENV, "/opt/ray/venv/bin/python", "-c",
                           NODES_SCRIPT, cluster.gcs, timeout=60)
    return {n["ip"] for n in json.loads(out.stdout)}


def test_a_worker_on_another_python_than_the_head_is_refused_by_name(pool, tmp_path) -> None:
    """Debian 12 head (3.11), Debian 13 worker (3.13): the worker fails preflight, named, with
    both Pythons and what to do; the head comes up; nothing is changed on the worker."""
    head, worker = pool.machines[0], pool.machines[1]
    cluster = cluster_of(pool, head, [worker],
                         ensure_wheelhouse(suites=("bookworm", "trixie")), tmp_path / "a")
    result = cluster.playbook("up", check=False)
    counts = recap(result.stdout)
    assert counts[head.ip]["failed"] == 0 and counts[worker.ip]["failed"] == 1, counts
    assert counts[worker.ip]["changed"] == 0, counts
    text = one_line(result.stdout)
    failure = text[text.index(f"fatal: [{worker.ip}]"):]
    assert f"{worker.ip} (debian 13, Python {os_python(cluster, worker)}" in failure
    assert (f"the head {head.ip} runs Ray under Python {os_python(cluster, head)}, and Ray "
            "refuses a node whose Python differs") in failure, failure[:1500]
    assert "set ray_python to it for this host" in failure
    cluster.wait_alive({head.ip})
    cluster.pool.ssh(worker, "test", "!", "-e", "/opt/ray/venv")  # no install was attempted
    cluster.playbook("down")


def test_a_debian_13_cluster_is_told_what_to_build_and_comes_up_on_its_python(pool,
                                                                               tmp_path) -> None:
    """Debian 13 head and worker, a wheelhouse with Python 3.11 wheels only: preflight names
    each node and prints the pip command that builds its part; run as printed, `up` brings
    both ALIVE, with the same Ray, each venv on Debian 13's own Python."""
    head, worker = pool.machines[1], pool.machines[2]
    full = ensure_wheelhouse(suites=("bookworm",))
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    (wheelhouse / "cp311-x86_64").symlink_to(full / "cp311-x86_64", target_is_directory=True)
    cluster = cluster_of(pool, head, [worker], wheelhouse, tmp_path / "b")

    refused = cluster.playbook("up", check=False)
    assert recap(refused.stdout)[head.ip]["failed"] == 1
    text = one_line(refused.stdout)
    failure = text[text.index(f"fatal: [{head.ip}]"):]
    assert f"{head.ip} (debian 13, Python 3.13" in failure, failure[:1500]
    assert f"the wheelhouse {wheelhouse} has no ray 2.60.0 wheel for Python 3.13" in failure
    # The message as Ansible's error line has it (one line), not as the YAML result quotes it.
    command = re.search(r"^\[ERROR\]: .*?Build cp313-x86_64 on the controller: "
                        r"(python3 -m pip download .*)$", refused.stdout, re.MULTILINE)
    assert command, failure[:3000]
    assert "'ray[default]==2.60.0' ansible-core==" in command.group(1)  # the agent's too
    # The command as printed (bash expands its braces), run by this checkout's Python.
    subprocess.run(["bash", "-c", command.group(1).replace("python3", sys.executable, 1)],
                   check=True, capture_output=True, timeout=900)

    cluster.playbook("up")
    cluster.wait_alive({head.ip, worker.ip})
    for machine in (head, worker):
        assert cluster.pool.ssh(machine, "sh", "-c", ". /etc/os-release; echo $VERSION_ID"
                                ).stdout.strip() == "13"
        assert versions(cluster, machine) == ("2.60.0", os_python(cluster, machine))
        assert os_python(cluster, machine).startswith("3.13.")

    # A worker that would get another Ray than the head's is refused by name, left as it was.
    other = cluster.playbook("add_workers", "--limit", worker.ip, "-e", "ray_version=2.59.0",
                             check=False)
    assert recap(other.stdout)[worker.ip] | {"ok": 0} == {"ok": 0, "changed": 0,
                                                           "unreachable": 0, "failed": 1}
    refusal = one_line(other.stdout)
    refusal = refusal[refusal.index(f"fatal: [{worker.ip}]"):]
    assert (f"{worker.ip}: cannot host Ray here" in refusal and f"the head {head.ip} has Ray "
            "2.60.0" in refusal and "this worker would get Ray 2.59.0" in refusal), refusal[:1500]
    assert versions(cluster, worker)[0] == "2.60.0"
    assert alive(cluster) == {head.ip, worker.ip}
    cluster.playbook("down")
