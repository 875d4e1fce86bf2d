"""`ansible-inventory` on real sources, run as a user runs it: from the repository root, with
its ansible.cfg, as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# A full local-provider cluster YAML in the shape of Ray's own example-full.yaml: a docker
# section, the placeholders filled in, Ray's stock start commands (tests/integration/fixtures).
RAY_EXAMPLE = Path(__file__).resolve().parent / "fixtures" / "ray-local-full.yaml"


def run(tool: str, *args: str, fatal: bool = True) -> subprocess.CompletedProcess:
    """Run an Ansible CLI from the repository root with its ansible.cfg.

    fatal: make a source that fails to parse stop the run (any_unparsed_is_failed), as the
    collection's documentation asks of users, whatever the checkout's ansible.cfg says.
    """
    assert (REPO / ".cache" / "collections" / "ansible_collections" / "onprem" / "ray").exists(), \
        "the collection is not linked in: run `make setup`"
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    env.pop("ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED", None)
    if fatal:
        env["ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED"] = "true"
    return subprocess.run([str(BIN / tool), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def plain(value):
    """ansible-inventory --list marks untrusted strings {"__ansible_unsafe": ...}: unwrap."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def inventory(source: Path) -> dict:
    result = run("ansible-inventory", "-i", str(source), "--list")
    assert result.returncode == 0, result.stderr
    assert "[WARNING]" not in result.stderr, result.stderr
    return plain(json.loads(result.stdout))


def hosts_of(listing: dict, group: str) -> list[str]:
    return listing.get(group, {}).get("hosts", [])


def refused(source: Path) -> str:
    """stderr of ansible-inventory on a source that must be refused."""
    result = run("ansible-inventory", "-i", str(source), "--list")
    assert result.returncode != 0, result.stdout
    return result.stderr


# ---------------------------------------------------------------- the example inventories


def test_the_example_site():
    source = REPO / "inventories" / "example" / "cluster.yml"
    listing = inventory(source)
    cpus = [f"10.20.0.{n}" for n in range(11, 19)]
    gpus = [f"10.20.1.{n}" for n in range(1, 7)] + ["gpu-big.lab.example"]
    assert hosts_of(listing, "ray_head") == ["10.20.0.10"]
    assert hosts_of(listing, "ray_workers") == cpus + gpus
    assert hosts_of(listing, "ray_node_type_head") == ["10.20.0.10"]
    assert hosts_of(listing, "ray_node_type_cpu") == cpus
    assert hosts_of(listing, "ray_node_type_gpu") == gpus
    hostvars = listing["_meta"]["hostvars"]
    gpu = hostvars["10.20.1.6"]
    assert gpu["ray_resources"] == {"CPU": 64, "GPU": 8, "accelerator_type:A100": 1}
    assert gpu["ray_labels"] == {"accelerator": "a100"}
    assert gpu["ray_setup_commands"] == ["mkdir -p ~/scratch", "nvidia-smi -L"]
    assert (gpu["ray_node_type_min_workers"], gpu["ray_node_type_max_workers"]) == (0, 4)
    assert (gpu["ray_min_workers"], gpu["ray_max_workers"]) == (0, 12)
    assert gpu["ray_cluster_file"] == str(source)
    assert hostvars["10.20.0.10"]["ray_setup_commands"] == ["mkdir -p ~/scratch"]
    assert hostvars["10.20.0.11"]["ray_node_type_min_workers"] == 1
    for values in hostvars.values():
        assert values["ansible_user"] == "ops"
        assert values["ansible_ssh_common_args"] == "-o StrictHostKeyChecking=accept-new"
        assert values["ray_head_ip"] == "10.20.0.10"


def test_the_ray_yaml_site():
    source = REPO / "inventories" / "ray-yaml" / "cluster.yml"
    listing = inventory(source)
    assert hosts_of(listing, "ray_head") == ["192.168.50.10"]
    assert hosts_of(listing, "ray_workers") == ["192.168.50.11", "192.168.50.12",
                                                "192.168.50.13"]
    worker = listing["_meta"]["hostvars"]["192.168.50.12"]
    assert worker["ray_cluster_file"] == str(source)
    assert worker["ray_node_type"] == "local.cluster.node"
    assert (worker["ray_min_workers"], worker["ray_max_workers"]) == (0, 3)
    assert worker["ray_start_ray_commands"] == []  # Ray's stock commands: the roles' unit
    assert worker["ray_rsync_exclude"] == ["**/.git", "**/.git/**"]
    assert worker["ansible_user"] == "ubuntu"


# ---------------------------------------------------------------- a full Ray YAML, docker included


def test_the_fixture_is_a_cluster_yaml_ray_itself_accepts():
    """Ray's own validation (its cluster schema), after Ray's local provider defaults."""
    code = ("import sys, yaml; "
            "from ray.autoscaler._private.util import prepare_config, validate_config; "
            "config = yaml.safe_load(open(sys.argv[1])); "
            "validate_config(prepare_config(config)); "
            "print(config['docker']['image'], len(config['provider']['worker_ips']))")
    done = subprocess.run([sys.executable, "-c", code, str(RAY_EXAMPLE)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["rayproject/ray-ml:latest-gpu", "3"]


def ray_example(tmp_path: Path, comment_out_docker: bool = False) -> Path:
    """The Ray YAML, and a source that points at it."""
    text = RAY_EXAMPLE.read_text()
    if comment_out_docker:  # what the example's own comment offers
        lines = text.splitlines(keepends=True)
        start = lines.index("docker:\n")
        end = lines.index("\n", start)
        text = "".join(lines[:start] + ["# " + line for line in lines[start:end]] + lines[end:])
    (tmp_path / "example-full.yaml").write_text(text)
    source = tmp_path / "cluster.yml"
    source.write_text("plugin: onprem.ray.cluster\nray_cluster_yaml: example-full.yaml\n")
    return source


def test_rays_example_as_is_is_refused_for_its_docker_image(tmp_path):
    stderr = refused(ray_example(tmp_path))
    assert (f"{tmp_path / 'example-full.yaml'}: docker.image = 'rayproject/ray-ml:latest-gpu': "
            "not supported: running Ray in containers is not supported yet") in stderr


def test_rays_example_without_docker_gives_the_same_cluster_as_ray_up(tmp_path):
    listing = inventory(ray_example(tmp_path, comment_out_docker=True))
    assert hosts_of(listing, "ray_head") == ["192.0.2.10"]
    assert hosts_of(listing, "ray_workers") == ["192.0.2.11", "192.0.2.12", "192.0.2.13"]
    worker = listing["_meta"]["hostvars"]["192.0.2.13"]
    assert worker["ray_cluster_name"] == "default"
    assert worker["ansible_user"] == "ops"
    assert "ansible_ssh_private_key_file" not in worker  # commented out in the file
    assert (worker["ray_min_workers"], worker["ray_max_workers"]) == (3, 3)
    assert worker["ray_rsync_exclude"] == ["**/.git", "**/.git/**"]
    assert worker["ray_rsync_filter"] == [".gitignore"]
    assert worker["ray_setup_commands"] == []
    assert worker["ray_start_ray_commands"] == []


# ---------------------------------------------------------------- bad input


BASE = """\
plugin: onprem.ray.cluster
cluster_name: lab
provider:
  type: local
  head_ip: 10.0.0.1
  worker_ips: [10.0.0.2, 10.0.0.3]
auth:
  ssh_user: ops
"""

BAD = {
    "malformed-yaml": (BASE + "max_workers: [1\n",
                       ["line 10 column 1: malformed YAML"]),
    "not-an-address": (BASE.replace("10.0.0.3]", "10.0.0.256]"),
                       ["provider.worker_ips[1] = '10.0.0.256': not an IP address"]),
    "duplicate-across-types": (BASE + "head_node_type: a\navailable_node_types:\n"
                               "  a: {worker_ips: [10.0.1.0/30]}\n"
                               "  b: {worker_ips: [10.0.1.2]}\n",
                               ["available_node_types.b.worker_ips[0] = '10.0.1.2': 10.0.1.2 "
                                "is also listed at available_node_types.a.worker_ips[0]"]),
    "head-in-workers": (BASE.replace("10.0.0.3]", "10.0.0.1]"),
                        ["provider.worker_ips[1] = '10.0.0.1': 10.0.0.1 is the head"]),
    "empty-pool": ("plugin: onprem.ray.cluster\nauth: {ssh_user: ops}\n",
                   ["provider.head_ip: missing: the pool is empty"]),
    "min-above-max": (BASE + "min_workers: 2\nmax_workers: 1\n",
                      ["min_workers = 2: is above max_workers (1)"]),
    # provider.worker_ips are machines of the head's type: gpu has three.
    "type-max-above-its-ips": (BASE + "head_node_type: gpu\navailable_node_types:\n"
                               "  gpu: {worker_ips: [10.0.1.1], max_workers: 4}\n",
                               ["available_node_types.gpu.max_workers = 4: is above the 3 "
                                "worker machines of this node type"]),
    "negative-limit": (BASE + "max_workers: -1\n", ["max_workers = -1: must be a whole number"]),
    "non-numeric-limit": (BASE + "min_workers: some\n",
                          ["min_workers = 'some': must be a whole number"]),
    "shell-in-user": (BASE.replace("ssh_user: ops", "ssh_user: ops;reboot"),
                      ["auth.ssh_user = 'ops;reboot': not a valid user name"]),
    "shell-in-name": (BASE.replace("cluster_name: lab", "cluster_name: $(reboot)"),
                      ["cluster_name = '$(reboot)': not a valid cluster name"]),
    "unknown-key": (BASE + "idle_timeout_minute: 3\n",
                    ["idle_timeout_minute = 3: unknown key; did you mean idle_timeout_minutes?"]),
    "cloud-provider": (BASE.replace("type: local", "type: aws"),
                       ["provider.type = 'aws': not supported: only the local provider"]),
    "coordinator": (BASE.replace("type: local", "type: local\n  coordinator_address: h:1"),
                    ["provider.coordinator_address = 'h:1': not supported"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_naming_file_key_and_value(tmp_path, case):
    text, expected = BAD[case]
    source = tmp_path / "bad.cluster.yml"
    source.write_text(text)
    stderr = refused(source)
    assert f"{source}: " in stderr
    for fragment in expected:
        assert fragment in stderr


@pytest.mark.parametrize(("mode", "problem"), [
    (None, "cannot be read: No such file or directory"),
    (0o644, "permissions 0644 let others read the key; run chmod 600"),
    (0o640, "permissions 0640 let others read the key"),
])
def test_a_private_key_missing_or_readable_by_others(tmp_path, mode, problem):
    if mode is not None:
        (tmp_path / "id_ed25519").write_text("not really a key\n")
        (tmp_path / "id_ed25519").chmod(mode)
    source = tmp_path / "bad.cluster.yml"
    source.write_text(BASE + "  ssh_private_key: id_ed25519\n")
    stderr = refused(source)
    assert f"{source}: auth.ssh_private_key = 'id_ed25519': {problem}" in stderr


def test_the_repository_config_makes_a_refused_source_fatal(tmp_path):
    """With the default ansible.cfg, Ansible would skip a refused source with a warning and
    carry on with an empty inventory: the checkout's config must set any_unparsed_is_failed."""
    source = tmp_path / "bad.cluster.yml"
    source.write_text(BASE + "max_workers: -1\n")
    result = run("ansible-inventory", "-i", str(source), "--list", fatal=False)
    assert result.returncode != 0, "ansible.cfg: set any_unparsed_is_failed = true in [inventory]"


def test_ansible_doc_renders_the_plugin():
    result = run("ansible-doc", "-t", "inventory", "onprem.ray.cluster")
    assert result.returncode == 0, result.stderr
    for text in ("ray_cluster_yaml", "state_store", "keyed_groups", "EXAMPLES",
                 "any_unparsed_is_failed"):
        assert text in result.stdout


# ---------------------------------------------------------------- the local test pool


@pytest.mark.pool
def test_the_pools_generated_inventory(pool):
    listing = inventory(pool.inventory)
    workers = [machine.ip for machine in pool.workers]
    assert hosts_of(listing, "ray_head") == [pool.head.ip]
    assert hosts_of(listing, "ray_workers") == workers
    head = listing["_meta"]["hostvars"][pool.head.ip]
    assert "StrictHostKeyChecking=yes" in head["ansible_ssh_common_args"]
    # The hostvars reach the machines over SSH with their host keys verified.
    result = run("ansible", "all", "-i", str(pool.inventory), "-m", "ansible.builtin.ping",
                 "-o")
    assert result.returncode == 0, result.stdout + result.stderr
    for ip in [pool.head.ip, *workers]:
        assert f"{ip} | SUCCESS" in result.stdout
