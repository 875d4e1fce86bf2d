"""The onprem-ray distribution: built offline from the checkout, it carries the agent and the
collection where ansible-core finds collections, with galaxy.yml's version."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from ansible_collections.onprem.ray.plugins.plugin_utils.agent_wheel import (
    WheelError,
    agent_wheel,
    repack_installed,
)

REPO = Path(__file__).resolve().parents[2]
COLLECTION = "ansible_collections/onprem/ray/"


def build(cache: Path) -> dict:
    """The wheel as the head role gets it (lookup onprem.ray.agent_wheel)."""
    return agent_wheel({"source": str(REPO), "cache": str(cache), "version": "0.1.0",
                        "collections": ["ansible.posix", "no.such"]}, sys.path)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    return build(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def wheel(built) -> Path:
    return Path(built["wheel"])


def test_the_version_is_the_collections():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    assert project["name"] == "onprem-ray"
    assert project["version"] == galaxy["version"]


def test_the_wheel_holds_the_agent_and_the_installed_collection(wheel):
    assert wheel.name == "onprem_ray-0.1.0-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in ("galaxy.yml", "meta/runtime.yml", "playbooks/up.yml",
                 "playbooks/add_workers.yml", "roles/head/tasks/main.yml",
                 "roles/head/templates/onprem-ray-agent.service.j2",
                 "plugins/inventory/cluster.py"):
        assert COLLECTION + path in names
    # Every module of the agent's package, its subpackages too.
    package = REPO / "agent" / "onprem_ray_agent"
    sources = {str(p.relative_to(package.parent)) for p in package.rglob("*.py")}
    assert len(sources) > 20 and "onprem_ray_agent/policy/__init__.py" in sources
    assert sources <= names, sorted(sources - names)
    # Only what an installed collection and the agent need.
    kept_out = [n for n in names if n.startswith((COLLECTION + "tests/", "tests/", "bench/"))
                or "/tests/" in n or n.endswith(".pyc") or "molecule" in n]
    assert kept_out == []
    entry_points = zipfile.ZipFile(wheel).read("onprem_ray-0.1.0.dist-info/entry_points.txt")
    assert b"onprem-ray-agent = onprem_ray_agent.cli:main" in entry_points
    assert b"onprem-ray = onprem_ray_cli.main:main" in entry_points
    # The operator's command, whole.
    command = REPO / "cli" / "onprem_ray_cli"
    modules = {str(p.relative_to(command.parent)) for p in command.glob("*.py")}
    assert len(modules) > 5 and "onprem_ray_cli/main.py" in modules
    assert modules <= names, sorted(modules - names)


def test_the_build_is_cached_and_reproducible(built, wheel, tmp_path):
    """Built once per content, and the head role copies the wheel only when its bytes differ:
    the same sources must give the same bytes, also in another cache; the checkout is left as
    it was (no build/ or egg-info: the build runs on a copy)."""
    assert built["built"] is True
    again = build(wheel.parents[1])
    assert (again["wheel"], again["built"]) == (str(wheel), False)
    elsewhere = build(tmp_path)
    assert elsewhere["built"] is True
    assert Path(elsewhere["wheel"]).read_bytes() == wheel.read_bytes()
    assert not (REPO / "build").exists()
    assert list(REPO.glob("*.egg-info")) == []


def test_the_collections_the_agent_needs_are_found_on_the_controller(built):
    assert Path(built["collections"]["ansible.posix"], "MANIFEST.json").is_file()
    assert built["collections"]["no.such"] is None


def test_the_hashes_are_those_the_head_compares(built, wheel):
    """The wheel's SHA-256, and each collection's tree hash as onprem.ray.node_facts computes
    it on the head (the head role skips a copy when they are equal)."""
    from ansible_collections.onprem.ray.plugins.modules import node_facts

    assert built["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    posix = built["collections"]["ansible.posix"]
    assert built["trees"] == {"ansible.posix": node_facts.tree_hash(posix), "no.such": None}
    assert len(built["trees"]["ansible.posix"]) == 64


def test_installed_ansible_finds_the_collection_and_the_command_runs(wheel, tmp_path):
    """Installed into a directory on Python's path: ansible-core finds onprem.ray there (no
    collections path configured), and the agent's console script runs."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-index", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    env = os.environ | {"PYTHONPATH": str(target), "ANSIBLE_COLLECTIONS_PATH": str(tmp_path),
                        "ANSIBLE_CONFIG": str(tmp_path / "none.cfg")}
    listed = subprocess.run([Path(sys.executable).parent / "ansible-galaxy", "collection",
                             "list", "onprem.ray"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, check=True)
    assert f"# {target}/ansible_collections" in listed.stdout
    assert "onprem.ray 0.1.0" in " ".join(listed.stdout.split())
    version = subprocess.run([target / "bin" / "onprem-ray-agent", "--version"], env=env,
                             capture_output=True, text=True, check=True)
    assert version.stdout.strip() == "0.1.0"
    version = subprocess.run([target / "bin" / "onprem-ray", "--version"], env=env,
                             capture_output=True, text=True, check=True)
    assert version.stdout.strip() == "0.1.0"


def test_without_a_checkout_the_wheel_comes_from_the_wheelhouse_or_the_error_says_how(tmp_path):
    """An installed collection (no agent sources beside pyproject.toml) cannot build the wheel:
    it is taken from ray_wheelhouse_dir, else the error says what to do."""
    installed = tmp_path / "ansible_collections" / "onprem" / "ray"
    installed.mkdir(parents=True)
    (installed / "pyproject.toml").write_text("")
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    args = {"source": str(installed), "cache": str(tmp_path / "cache"), "version": "0.1.0",
            "wheelhouse": str(wheelhouse)}
    with pytest.raises(WheelError) as refused:
        agent_wheel(args, [])
    message = str(refused.value)
    assert f"{installed} is not a checkout" in message
    assert "onprem_ray-0.1.0-py3-none-any.whl is not in ray_wheelhouse_dir" in message
    assert "set head_agent_wheel, or head_agent_install: false" in message
    carried = wheelhouse / "onprem_ray-0.1.0-py3-none-any.whl"
    carried.write_bytes(b"")
    assert agent_wheel(args, [])["wheel"] == str(carried)
    with pytest.raises(WheelError, match=f"head_agent_wheel {tmp_path / 'none.whl'} does not"):
        agent_wheel(args | {"wheel": str(tmp_path / "none.whl")}, [])


def test_the_code_version_changes_with_the_agents_code_only(tmp_path):
    """A changed role gives another wheel (the collection is in it) but the same code version
    (the agent is reloaded, not restarted); a changed agent module changes both."""
    source = tmp_path / "src"
    source.mkdir()
    for part in ("pyproject.toml", "README.md", "galaxy.yml", "agent/onprem_ray_agent",
                 "cli/onprem_ray_cli", "meta", "playbooks", "plugins", "roles"):
        if (REPO / part).is_dir():
            shutil.copytree(REPO / part, source / part,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / part, source / part)
    args = {"source": str(source), "cache": str(tmp_path / "cache"), "version": "0.1.0"}
    first = agent_wheel(args, [])
    (source / "roles/head/defaults/main.yml").write_text(
        (source / "roles/head/defaults/main.yml").read_text() + "# changed\n")
    role_changed = agent_wheel(args, [])
    assert role_changed["wheel"] != first["wheel"] and role_changed["built"]
    assert role_changed["code"] == first["code"]
    (source / "agent/onprem_ray_agent/model.py").write_text(
        (source / "agent/onprem_ray_agent/model.py").read_text() + "# changed\n")
    code_changed = agent_wheel(args, [])
    assert code_changed["code"] != first["code"]


def test_an_installed_distribution_is_packed_again_into_the_same_wheel(wheel, tmp_path):
    """`pip install onprem-ray` is all a controller needs: the collection found inside an
    installed distribution gives the head a wheel of that distribution, with the same files
    as the one it was installed from, installable again, and the same bytes on each run."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-index", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    collection = os.path.realpath(target / "ansible_collections" / "onprem" / "ray")
    assert repack_installed(collection, str(tmp_path / "cache"), path=[str(tmp_path)]) is None
    repacked = Path(repack_installed(collection, str(tmp_path / "cache"), path=[str(target)]))
    assert repacked.name == wheel.name
    original, again = zipfile.ZipFile(wheel), zipfile.ZipFile(repacked)
    names = sorted(n for n in original.namelist() if not n.endswith(".dist-info/RECORD"))
    assert names and names == sorted(n for n in again.namelist()
                                     if not n.endswith(".dist-info/RECORD"))
    assert all(original.read(name) == again.read(name) for name in names)
    first = repacked.read_bytes()
    repacked.unlink()
    assert Path(repack_installed(collection, str(tmp_path / "cache"),
                                 path=[str(target)])).read_bytes() == first
    reinstalled = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                                  "--no-deps", "--no-index", "--target",
                                  str(tmp_path / "again"), str(repacked)],
                                 capture_output=True, text=True, check=False)
    assert reinstalled.returncode == 0, reinstalled.stderr
    assert (tmp_path / "again" / "onprem_ray_agent" / "policy" / "scale_up.py").is_file()
