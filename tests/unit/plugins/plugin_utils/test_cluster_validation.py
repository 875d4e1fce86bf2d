"""The cluster file's validation: parsing, expansion, defaults and every refusal."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.onprem.ray.plugins.plugin_utils import cluster_validation as validation
from ansible_collections.onprem.ray.plugins.plugin_utils.addresses import expand_address
from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_file import (
    INVENTORY_KEYS,
    load_cluster_file,
)
from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_model import (
    IMPLICIT_NODE_TYPE,
    ClusterConfigError,
    HostCommands,
)
from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_validation import validate
from ansible_collections.onprem.ray.plugins.plugin_utils.hostvars import (
    host_variables,
    ssh_common_args,
)

REPO = Path(__file__).resolve().parents[4]


def base(**changes):
    """A small valid cluster (Ray's legacy local form), with top-level keys changed."""
    data = {
        "cluster_name": "lab",
        "provider": {"type": "local", "head_ip": "10.0.0.1",
                     "worker_ips": ["10.0.0.2", "10.0.0.3"]},
        "auth": {"ssh_user": "ops"},
    }
    data.update(changes)
    return data


def typed(**types):
    """A cluster with node types; the head's type is `head` (added when not given)."""
    types.setdefault("head", {})
    return {
        "cluster_name": "lab",
        "provider": {"type": "local", "head_ip": "10.0.0.1"},
        "auth": {"ssh_user": "ops"},
        "head_node_type": "head",
        "available_node_types": types,
    }


def problems(data, **kwargs):
    """(path, reason) of every problem; fails when the data is accepted."""
    kwargs.setdefault("check_files", False)
    with pytest.raises(ClusterConfigError) as caught:
        validate(data, source="/site/lab.cluster.yml", **kwargs)
    assert str(caught.value).startswith("/site/lab.cluster.yml: ")
    return [(p.path, p.reason) for p in caught.value.problems]


def only_problem(data, **kwargs):
    found = problems(data, **kwargs)
    assert len(found) == 1, found
    return found[0]


# ---------------------------------------------------------------- addresses


@pytest.mark.parametrize(("entry", "expected"), [
    ("10.0.0.7", ["10.0.0.7"]),
    ("fd00::0001", ["fd00::1"]),
    ("gpu-01.lab.example", ["gpu-01.lab.example"]),
    ("node7", ["node7"]),
    ("10.0.0.5-10.0.0.8", ["10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8"]),
    ("10.0.0.255-10.0.1.1", ["10.0.0.255", "10.0.1.0", "10.0.1.1"]),
    ("10.0.0.9-10.0.0.9", ["10.0.0.9"]),
    ("fd00::1-fd00::3", ["fd00::1", "fd00::2", "fd00::3"]),
    ("10.0.0.0/30", ["10.0.0.1", "10.0.0.2"]),
    ("10.0.0.4/31", ["10.0.0.4", "10.0.0.5"]),
    ("10.0.0.9/32", ["10.0.0.9"]),
])
def test_address_entries_expand(entry, expected):
    assert expand_address(entry) == expected


def test_a_cidr_block_of_the_maximum_size_expands_without_network_and_broadcast():
    assert len(expand_address("10.1.0.0/20")) == 4094


@pytest.mark.parametrize(("entry", "reason"), [
    ("10.0.0.300", "not an IP address, a hostname"),
    ("10.0.0", "not an IP address, a hostname"),
    ("010.0.0.1", "not an IP address, a hostname"),
    ("-node", "not an IP address, a hostname"),
    ("node_1", "contains '_'"),
    ("10.0.0.5-20", "a range names two full addresses"),
    ("10.0.0.9-10.0.0.5", "the range is empty"),
    ("10.0.0.1-fd00::1", "cannot mix IPv4 and IPv6"),
    ("10.0.0.0-10.0.255.255", "65536 addresses, more than the 4096"),
    ("10.0.0.0/16", "65536 addresses, more than the 4096"),
    ("10.0.0.5/24", "host bits are set; the block is 10.0.0.0/24"),
    ("10.0.0.0/33", "not a CIDR block"),
    ("fe80::1%eth0", "scoped IPv6"),
    ("10.0.0.1;reboot", "contains ';'"),
    ("$(reboot)", "contains '$' '(' ')'"),
    ("host name", "contains ' '"),
    ("a" * 64 + ".example", "not an IP address, a hostname"),
])
def test_bad_address_entries_say_why(entry, reason):
    with pytest.raises(ValueError, match=re.escape(reason)):
        expand_address(entry)


# ---------------------------------------------------------------- what a valid file gives


def test_ray_local_defaults_keep_every_worker_running():
    """Ray's local provider: min_workers and max_workers default to len(worker_ips)."""
    cluster = validate(base(), source="/site/lab.cluster.yml")
    assert cluster.head_ip == "10.0.0.1"
    assert cluster.worker_ips == ("10.0.0.2", "10.0.0.3")
    assert (cluster.min_workers, cluster.max_workers) == (2, 2)
    (node_type,) = cluster.node_types
    assert node_type.name == cluster.head_node_type == IMPLICIT_NODE_TYPE == "local.cluster.node"
    assert node_type.group == "ray_node_type_local_cluster_node"
    assert (node_type.min_workers, node_type.max_workers) == (2, 2)
    assert (cluster.upscaling_speed, cluster.idle_timeout_minutes) == (1.0, 5.0)
    assert cluster.source == "/site/lab.cluster.yml"


def test_max_workers_takes_precedence_over_rays_default_min():
    """Ray: min_workers defaults to every worker, but max_workers wins."""
    cluster = validate(base(max_workers=1))
    assert (cluster.min_workers, cluster.max_workers) == (1, 1)
    assert validate(base(min_workers=0)).max_workers == 2


def test_top_level_aliases_and_a_head_only_cluster():
    data = {"head_ip": "h1.lab.example", "worker_ips": [], "auth": {"ssh_user": "ops"}}
    cluster = validate(data)
    assert cluster.hosts == ("h1.lab.example",)
    assert cluster.cluster_name == "default"
    assert (cluster.min_workers, cluster.max_workers) == (0, 0)


def test_node_types_are_separate_pools_with_their_own_limits():
    data = typed(
        cpu={"worker_ips": ["10.0.1.1-10.0.1.4"], "resources": {"CPU": 32},
             "min_workers": 1},
        gpu={"worker_ips": ["10.0.2.0/30", "gpu-big"], "resources": {"GPU": 8, "CPU": 64},
             "labels": {"accelerator": "a100", "lab.example/rack": "r2"}, "max_workers": 2},
        head={"resources": {"CPU": 0}},
    )
    data["max_workers"] = 5
    cluster = validate(data)
    assert [t.name for t in cluster.node_types] == ["cpu", "gpu", "head"]
    assert cluster.node_type("gpu").ips == ("10.0.2.1", "10.0.2.2", "gpu-big")
    assert cluster.node_type("gpu").max_workers == 2
    assert cluster.node_type("cpu").max_workers == 4  # default: every machine of the type
    assert cluster.node_type("head").ips == ()
    assert (cluster.min_workers, cluster.max_workers) == (0, 5)
    assert cluster.node_type_of("10.0.0.1").name == "head"
    assert host_variables(cluster, "10.0.0.1")["ray_resources"] == {"CPU": 0}
    gpu = host_variables(cluster, "gpu-big")
    assert gpu["ray_labels"] == {"accelerator": "a100", "lab.example/rack": "r2"}
    assert (gpu["ray_node_type_min_workers"], gpu["ray_node_type_max_workers"]) == (0, 2)
    assert gpu["ray_max_workers"] == 5


@pytest.mark.parametrize(("value", "expected"), [
    (60, 60), (0, 0), (0.5, 0.5), (86400.0, 86400.0), (None, None)])
def test_a_node_type_has_its_own_idle_timeout(value, expected):
    """Ray's `idle_timeout_s` of a node type: seconds; empty or absent, the cluster's."""
    cluster = validate(typed(gpu={"worker_ips": ["10.0.2.1"], "idle_timeout_s": value},
                             cpu={"worker_ips": ["10.0.1.1"]}))
    assert cluster.node_type("gpu").idle_timeout_s == expected
    assert cluster.node_type("cpu").idle_timeout_s is None
    assert cluster.node_type("head").idle_timeout_s is None


@pytest.mark.parametrize("value", [-1, -0.5, "60", True, float("inf"), float("nan"), [60]])
def test_a_bad_idle_timeout_names_the_file_the_key_and_the_value(value):
    data = typed(gpu={"worker_ips": ["10.0.2.1"], "idle_timeout_s": value})
    assert only_problem(data) == ("available_node_types.gpu.idle_timeout_s",
                                  "must be a number >= 0")
    with pytest.raises(ClusterConfigError) as caught:
        validate(data, source="/site/lab.cluster.yml")
    assert str(caught.value) == (f"/site/lab.cluster.yml: available_node_types.gpu."
                                 f"idle_timeout_s = {value!r}: must be a number >= 0")


def test_provider_worker_ips_belong_to_the_heads_type():
    """As in Ray, where every worker_ips machine is of the one local type."""
    data = typed(gpu={"worker_ips": ["10.0.2.1"]})
    data["provider"]["worker_ips"] = ["10.0.0.2"]
    cluster = validate(data)
    assert cluster.node_type("head").ips == ("10.0.0.2",)
    assert cluster.worker_ips == ("10.0.2.1", "10.0.0.2")


def test_commands_per_host_follow_ray():
    data = typed(gpu={"worker_ips": ["10.0.2.1"], "worker_setup_commands": ["gpu-setup"],
                      "initialization_commands": ["gpu-init"]},
                 cpu={"worker_ips": ["10.0.1.1"]})
    data.update(initialization_commands=["init"], setup_commands=["common"],
                head_setup_commands=["head-only"], worker_setup_commands=["worker-only"],
                head_start_ray_commands=["start-head"], worker_start_ray_commands=["start-w"])
    cluster = validate(data)
    assert cluster.commands_for("10.0.0.1") == HostCommands(
        ("init",), ("common", "head-only"), ("start-head",))
    assert cluster.commands_for("10.0.1.1") == HostCommands(
        ("init",), ("common", "worker-only"), ("start-w",))
    # A type's own lists replace the global ones.
    assert cluster.commands_for("10.0.2.1") == HostCommands(
        ("gpu-init",), ("gpu-setup",), ("start-w",))
    vars_ = host_variables(cluster, "10.0.2.1")
    assert vars_["ray_setup_commands"] == ["gpu-setup"]
    assert vars_["ray_initialization_commands"] == ["gpu-init"]


def test_rays_stock_start_commands_mean_the_roles_unit():
    data = base(
        head_start_ray_commands=[
            "ray stop",
            "ulimit -c unlimited && ray start --head --port=6379 "
            "--autoscaling-config=~/ray_bootstrap_config.yaml"],
        worker_start_ray_commands=["ray stop", "ray start  --address=$RAY_HEAD_IP:6379"])
    cluster = validate(data)
    assert cluster.head_start_ray_commands == cluster.worker_start_ray_commands == ()


def test_custom_start_commands_are_kept_but_not_rays_own_autoscaler():
    kept = validate(base(worker_start_ray_commands=["ray start --address=$RAY_HEAD_IP:6379 "
                                                    "--num-cpus=4"]))
    assert kept.worker_start_ray_commands == (
        "ray start --address=$RAY_HEAD_IP:6379 --num-cpus=4",)
    path, reason = only_problem(base(head_start_ray_commands=[
        "ray start --head --autoscaling-config=/tmp/x.yaml"]))
    assert path == "head_start_ray_commands[0]"
    assert "Ray's own autoscaler" in reason


def test_files_and_patterns(tmp_path):
    data = base(file_mounts={"/srv/data": "data", "~/code": "/abs/code"},
                cluster_synced_files=["/srv/shared"], rsync_exclude=["**/.git"],
                rsync_filter=[".gitignore"], metadata={"owner": "lab"})
    cluster = validate(data, source=str(tmp_path / "lab.cluster.yml"))
    assert cluster.file_mounts == {"/srv/data": str(tmp_path / "data"), "~/code": "/abs/code"}
    assert cluster.cluster_synced_files == ("/srv/shared",)
    assert (cluster.rsync_exclude, cluster.rsync_filter) == (("**/.git",), (".gitignore",))
    assert cluster.metadata == {"owner": "lab"}


def test_docker_without_an_image_is_rays_disabled_docker():
    cluster = validate(base(docker={"image": "", "container_name": "ray", "run_options": []},
                            head_node={}, worker_nodes={}))
    assert cluster.hosts == ("10.0.0.1", "10.0.0.2", "10.0.0.3")


def test_external_head_ip_is_where_the_controller_reaches_the_head():
    data = base()
    data["provider"]["external_head_ip"] = "203.0.113.7"
    cluster = validate(data)
    assert host_variables(cluster, "10.0.0.1")["ansible_host"] == "203.0.113.7"
    assert host_variables(cluster, "10.0.0.1")["ray_head_ip"] == "10.0.0.1"
    data["provider"]["use_internal_ips"] = True
    assert host_variables(validate(data), "10.0.0.1")["ansible_host"] == "10.0.0.1"


# ---------------------------------------------------------------- auth and ssh


def test_private_key_and_known_hosts_resolve_against_the_file(tmp_path):
    key = tmp_path / "keys" / "id_ed25519"
    key.parent.mkdir()
    key.write_text("key")
    key.chmod(0o600)
    (tmp_path / "known_hosts").write_text("")
    data = base(auth={"ssh_user": "ops", "ssh_private_key": "keys/id_ed25519",
                      "ssh_known_hosts_file": "known_hosts"})
    cluster = validate(data, source=str(tmp_path / "lab.cluster.yml"))
    assert cluster.auth.ssh_private_key == str(key)
    vars_ = host_variables(cluster, "10.0.0.2")
    assert vars_["ansible_ssh_private_key_file"] == str(key)
    assert vars_["ansible_ssh_common_args"] == (
        f"-o UserKnownHostsFile={tmp_path}/known_hosts -o StrictHostKeyChecking=yes")


def test_without_known_hosts_keys_are_recorded_on_first_contact():
    vars_ = host_variables(validate(base()), "10.0.0.2")
    assert vars_["ansible_ssh_common_args"] == "-o StrictHostKeyChecking=accept-new"
    assert "ansible_ssh_private_key_file" not in vars_


def test_a_proxy_command_survives_ansibles_shlex_split():
    proxy = "ssh -W %h:%p -q 'jump host'"
    data = base(auth={"ssh_user": "ops", "ssh_proxy_command": proxy})
    args = ssh_common_args(validate(data).auth)
    assert shlex.split(args) == ["-o", "StrictHostKeyChecking=accept-new",
                                 "-o", f"ProxyCommand={proxy}"]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o700 | 0o007])
def test_a_private_key_others_can_read_is_refused(tmp_path, mode):
    key = tmp_path / "id"
    key.write_text("key")
    key.chmod(mode)
    data = base(auth={"ssh_user": "ops", "ssh_private_key": str(key)})
    path, reason = only_problem(data, check_files=True)
    assert path == "auth.ssh_private_key"
    assert f"permissions {mode:04o}" in reason
    assert "chmod 600" in reason


def test_a_missing_private_key_is_refused_unless_files_are_not_checked(tmp_path):
    data = base(auth={"ssh_user": "ops", "ssh_private_key": str(tmp_path / "nope")})
    path, reason = only_problem(data, check_files=True)
    assert path == "auth.ssh_private_key"
    assert "No such file" in reason
    assert validate(data, check_files=False).auth.ssh_private_key == str(tmp_path / "nope")


# ---------------------------------------------------------------- refusals


def test_every_problem_is_reported_at_once_with_file_key_and_value():
    data = base(max_workers=-1, min_workers="two", cluster_name="lab; rm -rf /")
    data["provider"]["worker_ips"] = ["10.0.0.2", "10.0.0.300", "10.0.0.2"]
    with pytest.raises(ClusterConfigError) as caught:
        validate(data, source="/site/lab.cluster.yml")
    message = str(caught.value)
    assert message.startswith("/site/lab.cluster.yml: 5 problems:\n")
    for line in ("max_workers = -1: must be a whole number >= 0",
                 "min_workers = 'two': must be a whole number >= 0",
                 "cluster_name = 'lab; rm -rf /': not a valid cluster name",
                 "provider.worker_ips[1] = '10.0.0.300': not an IP address",
                 "provider.worker_ips[2] = '10.0.0.2': 10.0.0.2 is also listed at "
                 "provider.worker_ips[0]"):
        assert f"  - {line}" in message


@pytest.mark.parametrize(("data", "path", "reason"), [
    (base(provider={"type": "aws", "head_ip": "10.0.0.1", "worker_ips": [],
                    "region": "us-east-1"}),
     "provider.type", "only the local provider"),
    (base(docker={"image": "rayproject/ray:latest-gpu"}), "docker.image", "containers"),
    (base(no_restart=True), "no_restart", "ray up --no-restart"),
    (base(initial_workers=1), "initial_workers", "use min_workers"),
    (base(file_mounts_sync_continuously=True), "file_mounts_sync_continuously",
     "not continuously"),
    (base(head_node={"InstanceType": "m5.large"}), "head_node", "legacy cloud node"),
    (base(auth={"ssh_user": "ops", "ssh_public_key": "~/.ssh/id.pub"}),
     "auth.ssh_public_key", "must already accept"),
    (base(auth={"ssh_user": "ops", "ssh_proxy_use_node_id": True}),
     "auth.ssh_proxy_use_node_id", "cloud instance IDs"),
    (typed(gpu={"worker_ips": ["10.0.2.1"], "node_config": {"InstanceType": "p3.2xlarge"}}),
     "available_node_types.gpu.node_config", "cloud instance settings"),
    (typed(gpu={"worker_ips": ["10.0.2.1"], "docker": {"worker_image": "img"}}),
     "available_node_types.gpu.docker.worker_image", "containers"),
    (typed(gpu={"worker_ips": ["10.0.2.1"], "priority": 2}),
     "available_node_types.gpu.priority", "not supported yet"),
])
def test_keys_that_cannot_be_honoured_are_refused_by_name(data, path, reason):
    found = problems(data)
    assert any(p == path and reason in r and r.startswith("not supported: ")
               for p, r in found), found


def test_the_coordinator_server_is_refused():
    data = base()
    data["provider"]["coordinator_address"] = "10.0.0.99:1234"
    path, reason = only_problem(data)
    assert path == "provider.coordinator_address"
    assert "coordinator server is not used" in reason


@pytest.mark.parametrize(("data", "path", "hint"), [
    (base(max_worker=3), "max_worker", "did you mean max_workers?"),
    (base(auth={"ssh_user": "ops", "ssh_privatekey": "k"}), "auth.ssh_privatekey",
     "did you mean auth.ssh_private_key?"),
    (typed(gpu={"worker_ips": ["10.0.2.1"], "resource": {"GPU": 1}}),
     "available_node_types.gpu.resource", "did you mean available_node_types.gpu.resources?"),
    (base(zzz=1), "zzz", "unknown key"),
])
def test_unknown_keys_are_refused_with_the_closest_name(data, path, hint):
    found_path, reason = only_problem(data)
    assert found_path == path
    assert reason.startswith("unknown key")
    assert reason.endswith(hint)


# ---------------------------------------------------------------- the checks the issue lists


def test_a_duplicated_ip_across_node_types():
    data = typed(cpu={"worker_ips": ["10.0.1.1-10.0.1.3"]},
                 gpu={"worker_ips": ["10.0.1.0/30"]})
    path, reason = only_problem(data)
    # 10.0.1.1 and 10.0.1.2 both collide: one problem for the entry, naming the first.
    assert path == "available_node_types.gpu.worker_ips[0]"
    assert reason == ("10.0.1.1 (from 10.0.1.0/30) is also listed at "
                      "available_node_types.cpu.worker_ips[0], and 1 more of its addresses")


def test_hostnames_collide_regardless_of_case():
    data = base()
    data["provider"]["worker_ips"] = ["gpu1.lab", "GPU1.lab"]
    path, reason = only_problem(data)
    assert path == "provider.worker_ips[1]"
    assert "also listed at provider.worker_ips[0]" in reason


def test_the_head_in_a_worker_list():
    data = base()
    data["provider"]["worker_ips"] = ["10.0.0.0/29"]
    path, reason = only_problem(data)
    assert path == "provider.worker_ips[0]"
    assert reason == ("10.0.0.1 (from 10.0.0.0/29) is the head (provider.head_ip); "
                      "the head is never a worker")


def test_an_empty_pool():
    found = problems({"auth": {"ssh_user": "ops"}})
    assert any("the pool is empty" in reason for _path, reason in found), found
    path, reason = only_problem(typed(gpu={"worker_ips": []}))
    assert path == "available_node_types.gpu.worker_ips"
    assert "has no machines" in reason


def test_an_empty_file_and_a_file_that_is_not_a_mapping():
    assert problems(None) == [("", "the file is empty")]
    assert problems(["10.0.0.1"]) == [("", "must be a mapping")]


@pytest.mark.parametrize(("data", "path", "reason"), [
    (base(min_workers=2, max_workers=1), "min_workers", "is above max_workers (1)"),
    (base(max_workers=3), "max_workers", "is above the 2 worker machines of the pool"),
    (typed(gpu={"worker_ips": ["10.0.2.1", "10.0.2.2"], "min_workers": 2, "max_workers": 1}),
     "available_node_types.gpu.min_workers", "is above max_workers (1)"),
    (typed(gpu={"worker_ips": ["10.0.2.1", "10.0.2.2"], "max_workers": 3}),
     "available_node_types.gpu.max_workers", "is above the 2 worker machines of this node type"),
    (typed(gpu={"worker_ips": ["10.0.2.1-10.0.2.3"], "min_workers": 3}) | {"max_workers": 2},
     "max_workers", "is below the node types' min_workers, which add up to 3"),
])
def test_inconsistent_limits(data, path, reason):
    found = problems(data)
    assert (path, reason) in found, found


@pytest.mark.parametrize("value", [-1, "3", 2.5, True, None])
@pytest.mark.parametrize("key", ["min_workers", "max_workers"])
def test_negative_or_non_numeric_limits(key, value):
    if value is None:  # an empty value is Ray's default, not an error
        assert validate(base(**{key: value})).max_workers == 2
        return
    assert only_problem(base(**{key: value})) == (key, "must be a whole number >= 0")


@pytest.mark.parametrize(("key", "value"), [
    ("upscaling_speed", -0.5), ("upscaling_speed", "fast"), ("idle_timeout_minutes", -1),
    ("idle_timeout_minutes", float("inf")), ("idle_timeout_minutes", float("nan")),
])
def test_autoscaler_numbers(key, value):
    assert only_problem(base(**{key: value})) == (key, "must be a number >= 0")


@pytest.mark.parametrize(("data", "path"), [
    (base(cluster_name="lab$(id)"), "cluster_name"),
    (base(cluster_name="-lab"), "cluster_name"),
    (base(cluster_name=7), "cluster_name"),
    (base(auth={"ssh_user": "ops`id`"}), "auth.ssh_user"),
    (base(auth={"ssh_user": "root user"}), "auth.ssh_user"),
    (typed(**{"gpu;reboot": {"worker_ips": ["10.0.2.1"]}}),
     "available_node_types['gpu;reboot']"),
    (typed(gpu={"worker_ips": ["10.0.2.1"], "labels": {"rack id": "r1"}}),
     "available_node_types.gpu.labels['rack id']"),
    (typed(gpu={"worker_ips": ["10.0.2.1"], "labels": {"rack": "r1 && id"}}),
     "available_node_types.gpu.labels.rack"),
    (typed(gpu={"worker_ips": ["10.0.2.1"], "labels": {"ray.io/node-id": "x"}}),
     "available_node_types.gpu.labels['ray.io/node-id']"),
    (typed(gpu={"worker_ips": ["10.0.2.1"], "resources": {"GPU'": 1}}),
     "available_node_types.gpu.resources[\"GPU'\"]"),
    (base(auth={"ssh_user": "ops", "ssh_private_key": "my key"}), "auth.ssh_private_key"),
    (base(auth={"ssh_user": "ops", "ssh_known_hosts_file": "k'h"}),
     "auth.ssh_known_hosts_file"),
    (base(auth={"ssh_user": "ops", "ssh_proxy_command": "nc %h %p\nreboot"}),
     "auth.ssh_proxy_command"),
    (base(head_ip="10.0.0.1 ; reboot", provider={"worker_ips": []}), "head_ip"),
])
def test_shell_metacharacters_where_a_name_or_address_is_expected(data, path):
    found = problems(data)
    assert path in [p for p, _reason in found], found


@pytest.mark.parametrize(("resources", "reason"), [
    ({"CPU": 1.5}, "must be a whole number >= 0"),
    ({"GPU": -1}, "must be a whole number >= 0"),
    ({"custom": 2.5}, "fractions only below 1"),
    ({"custom": "lots"}, "must be a number >= 0"),
    ({"node:10.0.0.1": 1}, "Ray's own"),
])
def test_resource_amounts(resources, reason):
    data = typed(gpu={"worker_ips": ["10.0.2.1"], "resources": resources})
    _path, found = only_problem(data)
    assert reason in found


def test_fractional_custom_resources_below_one_are_rays():
    data = typed(gpu={"worker_ips": ["10.0.2.1"], "resources": {"slice": 0.25, "CPU": 4}})
    assert validate(data).node_type("gpu").resources == {"slice": 0.25, "CPU": 4}


@pytest.mark.parametrize(("data", "path", "reason"), [
    (base(head_ip="10.0.0.9"), "head_ip", "given twice"),
    ({**typed(gpu={"worker_ips": ["10.0.2.1"]}), "head_node_type": "gpus"}, "head_node_type",
     "did you mean gpu?"),
    ({k: v for k, v in typed().items() if k != "head_node_type"}, "head_node_type",
     "required with available_node_types"),
    (base(head_node_type="cpu"), "head_node_type", "there is no available_node_types"),
    (typed(**{"a-b": {"worker_ips": ["10.0.2.1"]}, "a_b": {"worker_ips": ["10.0.2.2"]}}),
     "available_node_types.a_b", "same group name"),
    (base(provider={"head_ip": "10.0.0.0/30", "worker_ips": []}), "provider.head_ip",
     "one address"),
    (base(provider={"head_ip": "10.0.0.1"}), "provider.worker_ips", "worker_ips: []"),
    ({"provider": {"head_ip": "10.0.0.1", "worker_ips": []}}, "auth", "ssh_user is required"),
    (base(file_mounts={"relative/remote": "/local"}), "file_mounts['relative/remote']",
     "absolute path on the machines"),
    (base(setup_commands="pip install ray"), "setup_commands", "list of shell commands"),
    (base(setup_commands=["ok", ""]), "setup_commands[1]", "non-empty shell command"),
    (base(rsync_exclude=["a\x00b"]), "rsync_exclude[0]", "control characters"),
])
def test_other_inconsistencies(data, path, reason):
    found = problems(data)
    assert any(p == path and reason in r for p, r in found), found


# ---------------------------------------------------------------- files


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_malformed_yaml_names_line_and_column(tmp_path):
    source = write(tmp_path / "lab.cluster.yml",
                   "plugin: onprem.ray.cluster\nprovider:\n  head_ip: [10.0.0.1\n")
    with pytest.raises(ClusterConfigError) as caught:
        load_cluster_file(str(source))
    message = str(caught.value)
    assert message.startswith(f"{source}: line 4 column 1: malformed YAML: ")


def test_a_key_given_twice_in_yaml_is_refused(tmp_path):
    source = write(tmp_path / "lab.cluster.yml",
                   "head_ip: 10.0.0.1\nworker_ips: []\nauth: {ssh_user: ops}\n"
                   "head_ip: 10.0.0.2\n")
    with pytest.raises(ClusterConfigError) as caught:
        load_cluster_file(str(source))
    assert str(caught.value) == (f"{source}: line 4 column 1 = 'head_ip': duplicate key "
                                 "(first at line 1); YAML would keep only the last one")


def test_an_unreadable_file(tmp_path):
    with pytest.raises(ClusterConfigError, match="cannot be read: No such file"):
        load_cluster_file(str(tmp_path / "none.cluster.yml"))


def test_an_inventory_source_naming_a_ray_yaml(tmp_path):
    (tmp_path / "ray").mkdir()
    write(tmp_path / "ray" / "lab.yaml",
          "cluster_name: lab\nprovider: {type: local, head_ip: 10.0.0.1, "
          "worker_ips: [10.0.0.2]}\nauth: {ssh_user: ops}\n")
    source = write(tmp_path / "lab.cluster.yml",
                   "plugin: onprem.ray.cluster\nray_cluster_yaml: ray/lab.yaml\n"
                   "state_store: state.db\nkeyed_groups: []\n")
    cluster = load_cluster_file(str(source))
    assert cluster.source == str(source)
    assert cluster.ray_cluster_yaml == str(tmp_path / "ray" / "lab.yaml")
    assert host_variables(cluster, "10.0.0.2")["ray_cluster_file"] == str(source)


def test_errors_in_the_ray_yaml_name_the_ray_yaml(tmp_path):
    ray_yaml = write(tmp_path / "lab.yaml", "provider: {type: gcp}\nauth: {ssh_user: ops}\n")
    source = write(tmp_path / "lab.cluster.yml",
                   "plugin: onprem.ray.cluster\nray_cluster_yaml: lab.yaml\n")
    with pytest.raises(ClusterConfigError) as caught:
        load_cluster_file(str(source))
    assert caught.value.source == str(ray_yaml)
    assert "provider.type = 'gcp': not supported" in str(caught.value)


def test_a_ray_yaml_and_inline_keys_are_not_mixed(tmp_path):
    write(tmp_path / "lab.yaml", "head_ip: 10.0.0.1\nworker_ips: []\nauth: {ssh_user: ops}\n")
    source = write(tmp_path / "lab.cluster.yml", "plugin: onprem.ray.cluster\n"
                   "ray_cluster_yaml: lab.yaml\nmax_workers: 3\n")
    with pytest.raises(ClusterConfigError, match=r"max_workers = 3: ray_cluster_yaml is set"):
        load_cluster_file(str(source))
    missing = write(tmp_path / "other.cluster.yml",
                    "plugin: onprem.ray.cluster\nray_cluster_yaml: nope.yaml\n")
    with pytest.raises(ClusterConfigError, match=r"ray_cluster_yaml = 'nope.yaml': no such"):
        load_cluster_file(str(missing))


def test_a_source_of_another_plugin_is_refused(tmp_path):
    source = write(tmp_path / "x.cluster.yml", "plugin: amazon.aws.aws_ec2\n")
    with pytest.raises(ClusterConfigError, match=r"plugin = 'amazon\.aws\.aws_ec2': must be"):
        load_cluster_file(str(source))


# ---------------------------------------------------------------- contracts


def test_the_model_is_frozen():
    cluster = validate(base())
    with pytest.raises(AttributeError):
        cluster.head_ip = "10.0.0.9"


def test_every_host_gets_every_hostvar_of_the_contract():
    """docs/hostvars.md is what the roles read: every name in its hostvars table is set."""
    section = (REPO / "docs" / "hostvars.md").read_text().split("## Hostvars", 1)[1]
    names = {name for cell in re.findall(r"^\| ([^|]+) \|", section, re.M)
             for name in re.findall(r"`(\w+)`", cell)}
    assert {"ansible_host", "ray_setup_commands", "ray_node_type_max_workers"} <= names
    data = base(auth={"ssh_user": "ops", "ssh_private_key": "/nonexistent/key"})
    cluster = validate(data, check_files=False)
    for host in cluster.hosts:
        assert set(host_variables(cluster, host)) == names


def test_the_model_needs_no_ansible():
    """The agent imports the model through the collection's namespace as a plain Python
    package: it imports neither Ansible nor PyYAML until a file is read."""
    code = ("import sys; "
            "from ansible_collections.onprem.ray.plugins.plugin_utils import cluster_file; "
            "cluster_file.validate({'head_ip': '10.0.0.1', 'worker_ips': [], "
            "'auth': {'ssh_user': 'o'}}); "
            "print(sorted(n for n in sys.modules if n.split('.')[0] in ('ansible', 'yaml')))")
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env)
    assert out.stdout.strip() == "[]"


def test_the_reference_documents_every_key():
    """docs/cluster-file.md names every honoured and every refused key."""
    text = (REPO / "docs" / "cluster-file.md").read_text()
    documented = set(re.findall(r"`(?:[\w.<>*]+\.)?(\w+)(?:[:`])", text))
    tables = (validation._TOP_HONOURED, validation._TOP_REFUSED,
              validation._PROVIDER_HONOURED, validation._PROVIDER_REFUSED,
              validation._AUTH_HONOURED, validation._AUTH_REFUSED,
              validation._NODE_TYPE_HONOURED, validation._NODE_TYPE_REFUSED, INVENTORY_KEYS)
    keys = {key for table in tables for key in table}
    assert keys - documented == set()


def test_the_plugins_examples_are_valid():
    import ast

    import yaml

    tree = ast.parse((REPO / "plugins" / "inventory" / "cluster.py").read_text())
    examples = next(node.value.value for node in tree.body if isinstance(node, ast.Assign)
                    and getattr(node.targets[0], "id", "") == "EXAMPLES")
    documents = list(yaml.safe_load_all(examples))
    assert len(documents) == 3
    for document in documents:
        if "ray_cluster_yaml" in document:
            continue  # names a file of the reader's
        cluster = {k: v for k, v in document.items() if k not in INVENTORY_KEYS}
        assert validate(cluster, check_files=False).hosts
