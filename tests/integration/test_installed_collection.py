"""The collection as a user gets it: built into its artifact, installed with ansible-galaxy,
and used from a directory of the user's own with no ansible.cfg."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PLAYBOOKS = ("up", "down", "add_workers", "retire_workers")
REFUSED = """\
plugin: onprem.ray.cluster
provider: {type: local, head_ip: 10.0.0.1, worker_ips: [10.0.0.2]}
auth: {ssh_user: ops}
max_worker: 1
"""


def galaxy(*args: str, cwd: Path, env: dict | None = None) -> str:
    done = subprocess.run([str(BIN / "ansible-galaxy"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("build")
    galaxy("collection", "build", "--output-path", str(out), cwd=REPO)
    (built,) = out.glob("onprem-ray-*.tar.gz")
    return built


@pytest.fixture(scope="module")
def user(tmp_path_factory, artifact) -> dict:
    """A user's directory (no ansible.cfg) and an environment that finds the installed
    collection, and nothing of this checkout's settings."""
    home = tmp_path_factory.mktemp("user")
    collections = home / "collections"
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env |= {"HOME": str(home), "ANSIBLE_COLLECTIONS_PATH": str(collections),
            "ANSIBLE_NOCOLOR": "1"}
    # Installed as the user would, in the user's environment: with this checkout's settings,
    # ansible-galaxy would find the checkout's own onprem.ray and install nothing.
    galaxy("collection", "install", "--no-deps", "-p", str(collections), str(artifact),
           cwd=home, env=env)
    assert (collections / "ansible_collections/onprem/ray/playbooks/up.yml").is_file()
    return {"dir": home, "env": env}


def test_the_artifact_carries_the_collection_and_none_of_the_checkouts_tooling(artifact):
    with tarfile.open(artifact) as tar:
        names = tar.getnames()
    for needed in ("LICENSE", "README.md", "meta/runtime.yml", "plugins/inventory/cluster.py",
                   "plugins/plugin_utils/cluster_model.py", "playbooks/up.yml",
                   "tests/unit/plugins/plugin_utils/test_min_workers.py"):
        assert needed in names
    assert "conftest.py" not in names  # the checkout's hypothesis profiles
    kept_out = ("tests/pool/", "tests/integration/", "tests/e2e/", "tests/security/",
                "extensions/", "bench/",
                ".cache/", ".pool/", ".venv/", ".hypothesis/", "scripts/", "requirements/dev")
    assert [name for name in names if name.startswith(kept_out) or "__pycache__" in name] == []


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_a_refused_cluster_file_fails_every_playbook_with_the_reason(user, playbook):
    assert not (user["dir"] / "ansible.cfg").exists()
    source = user["dir"] / "site.cluster.yml"
    source.write_text(REFUSED)
    args = ["-i", str(source), f"onprem.ray.{playbook}"]
    if playbook in ("add_workers", "retire_workers"):
        args += ["--limit", "10.0.0.2"]
    done = subprocess.run([str(BIN / "ansible-playbook"), *args], cwd=user["dir"],
                          env=user["env"], capture_output=True, text=True, timeout=300,
                          check=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert (f"the inventory source {source} did not parse, and Ansible went on without it "
            "(see its warning above)") in output
    assert "max_worker = 1: unknown key; did you mean max_workers?" in output
    assert "PLAY RECAP" not in output  # stopped before any play ran


def test_an_inventory_with_no_cluster_at_all_is_named(user):
    hosts = user["dir"] / "hosts.ini"
    hosts.write_text("[web]\n10.0.0.9\n")
    done = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(hosts), "onprem.ray.up"],
                          cwd=user["dir"], env=user["env"], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode != 0
    assert (f"no host in ray_head: no cluster file among the inventory sources ({hosts})"
            in done.stdout + done.stderr)
