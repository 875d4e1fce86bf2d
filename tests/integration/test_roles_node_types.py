"""The roles with a cluster file that uses what Ray's format allows beyond a flat pool, on the
local test pool: node types with their own resources, labels and min_workers, file_mounts with
rsync_exclude / rsync_filter, cluster_synced_files, Ray's command lists and custom
head_start_ray_commands.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster, recap
from tests.pool import pool as pools
from tests.pool.wheelhouse import ensure_wheelhouse

pytestmark = pytest.mark.pool

NODES_SCRIPT = """
import json, sys
from ray._raylet import GcsClient
from ray.core.generated import gcs_pb2
nodes = GcsClient(address=sys.argv[1]).get_all_node_info(timeout=10).values()
print(json.dumps({n.node_manager_address: {
    "resources": {k: v for k, v in n.resources_total.items() if not k.startswith("node:")},
    "labels": dict(n.labels)} for n in nodes if n.state == gcs_pb2.GcsNodeInfo.ALIVE}))
"""


def cluster_file(pool: pools.Pool, mount: Path) -> str:
    small, big1, big2 = (m.ip for m in pool.workers[:3])
    return textwrap.dedent(f"""\
        plugin: onprem.ray.cluster
        cluster_name: types
        provider: {{type: local, head_ip: {pool.head.ip}}}
        auth:
          ssh_user: ops
          ssh_private_key: {pool.private_key}
          ssh_known_hosts_file: {pool.known_hosts}
        min_workers: 0
        max_workers: 3
        head_node_type: head
        available_node_types:
          head: {{resources: {{}}}}
          small:
            worker_ips: [{small}]
            resources: {{CPU: 1, custom_thing: 2}}
            labels: {{tier: small}}
            min_workers: 1
          big:
            worker_ips: [{big1}, {big2}]
            resources: {{CPU: 2, GPU: 1}}
            labels: {{tier: big}}
        file_mounts:
          /home/ops/mounted: {mount}
        rsync_exclude: ["*.log"]
        rsync_filter: [".gitignore"]
        cluster_synced_files: [/home/ops/shared]
        initialization_commands:
          - echo init >> /tmp/onprem-init-runs
        setup_commands:
          - command -v python > /tmp/onprem-setup-python
        head_setup_commands:
          - mkdir -p /home/ops/shared && echo from-the-head > /home/ops/shared/data.txt
        head_start_ray_commands:
          - ray stop
          - >-
            ulimit -n 65536; ray start --head --port=6379 --dashboard-host=$RAY_HEAD_IP
            --num-cpus=1 --resources='{{"from_custom": 1}}'
        """)


@pytest.fixture(scope="module")
def types(pool: pools.Pool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("types")
    mount = root / "mount"
    (mount / "sub").mkdir(parents=True)
    (mount / "a.txt").write_text("hello mount\n")
    (mount / "skip.log").write_text("excluded by rsync_exclude\n")
    (mount / "sub" / "ignored.txt").write_text("excluded by .gitignore\n")
    (mount / ".gitignore").write_text("sub/ignored.txt\n")
    inventory = root / "cluster.yml"
    inventory.write_text(cluster_file(pool, mount))
    made = Cluster(pool=pool, wheelhouse=ensure_wheelhouse(), inventory=inventory)
    # Whatever an earlier module left, start from machines without Ray running.
    made.playbook("down")
    made.playbook("up")
    yield made
    made.playbook("down")


def nodes(cluster: Cluster) -> dict[str, dict]:
    out = cluster.pool.ssh(cluster.pool.head, "sudo", "-u", "ray", "env", "RAY_AUTH_MODE=token",
                           "RAY_AUTH_TOKEN_PATH=/etc/ray/auth_token", "/opt/ray/venv/bin/python",
                           "-c", NODES_SCRIPT, cluster.gcs, timeout=60)
    return json.loads(out.stdout)


def test_up_starts_the_head_and_min_workers_of_each_type(types: Cluster) -> None:
    small, big1, big2 = types.pool.workers[:3]
    assert set(nodes(types)) == {types.pool.head.ip, small.ip}
    for spare in (big1, big2):
        unit = types.unit(spare)
        assert (unit["ActiveState"], unit["UnitFileState"]) == ("inactive", "disabled")


def test_node_types_give_resources_and_labels_and_custom_start_commands_are_honoured(
        types: Cluster) -> None:
    big = types.pool.workers[1]
    types.playbook("add_workers", "--limit", big.ip)
    found = nodes(types)
    small = found[types.pool.workers[0].ip]
    assert small["resources"]["CPU"] == 1 and small["resources"]["custom_thing"] == 2
    assert small["labels"]["tier"] == "small"
    assert found[big.ip]["resources"]["CPU"] == 2 and found[big.ip]["resources"]["GPU"] == 1
    assert found[big.ip]["labels"]["tier"] == "big"
    head = found[types.pool.head.ip]
    assert head["resources"]["from_custom"] == 1 and head["resources"]["CPU"] == 1
    script = types.pool.ssh(types.pool.head, "sudo", "cat", "/etc/ray/start-ray.sh").stdout
    lines = [line for line in script.splitlines() if line and not line.startswith("#")]
    assert not [line for line in lines if "ray stop" in line]
    assert lines[-1].startswith("ulimit -n 65536; ray start --head")
    assert lines[-1].endswith("--block")


def test_file_mounts_and_synced_files_follow_rays_rules(types: Cluster) -> None:
    for machine in types.pool.machines:
        listing = types.pool.ssh(machine, "find", "/home/ops/mounted", "-type", "f").stdout
        assert sorted(listing.split()) == ["/home/ops/mounted/.gitignore",
                                           "/home/ops/mounted/a.txt"], machine.ip
        shared = types.pool.ssh(machine, "cat", "/home/ops/shared/data.txt").stdout
        assert shared == "from-the-head\n", machine.ip


def test_commands_ran_once_as_the_login_user_with_rays_venv(types: Cluster) -> None:
    result = types.playbook("up")
    assert all(c["changed"] == 0 for c in recap(result.stdout).values())
    for machine in types.pool.machines:
        assert types.pool.ssh(machine, "cat", "/tmp/onprem-init-runs").stdout == "init\n"
        python = types.pool.ssh(machine, "cat", "/tmp/onprem-setup-python").stdout
        assert python == "/opt/ray/venv/bin/python\n"
        owner = types.pool.ssh(machine, "stat", "-c", "%U", "/tmp/onprem-setup-python").stdout
        assert owner.strip() == "ops"
