"""Which cluster a command is about: the three forms of cluster file, and the errors for a
missing or refused one (file, key, cause, exit code)."""

from __future__ import annotations

from pathlib import Path

import pytest

from onprem_ray_cli import errors, nodes, resolve
from onprem_ray_cli.main import main

RAY_YAML = """\
cluster_name: lab
provider: {type: local, head_ip: 10.0.0.1, worker_ips: [10.0.0.2, 10.0.0.3]}
auth: {ssh_user: ops}
"""


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_ray_yaml_gets_an_inventory_source_naming_it(tmp_path, cache):
    path = tmp_path / "ray.yaml"
    path.write_text(RAY_YAML)
    target = resolve.load(str(path))
    assert (target.cluster.head_ip, target.cluster.worker_ips) == ("10.0.0.1",
                                                                  ("10.0.0.2", "10.0.0.3"))
    source = resolve.inventory_source(target)
    assert source.parent == target.work_dir and cache in source.parents
    assert source.name == "cluster.yml"
    assert resolve.load(str(source)).cluster.worker_ips == target.cluster.worker_ips


def test_an_inventory_source_is_used_as_it_is(tmp_path):
    (tmp_path / "ray.yaml").write_text(RAY_YAML)
    source = tmp_path / "site.cluster.yml"
    source.write_text("plugin: onprem.ray.cluster\nray_cluster_yaml: ray.yaml\n")
    target = resolve.load(str(source))
    assert target.cluster.head_ip == "10.0.0.1"
    assert resolve.inventory_source(target) == source


def test_an_inventory_source_the_plugin_would_not_read_is_refused_with_what_to_do(tmp_path):
    source = tmp_path / "site.yml"
    source.write_text("plugin: onprem.ray.cluster\n" + RAY_YAML)
    with pytest.raises(errors.CliError) as refused:
        resolve.inventory_source(resolve.load(str(source)))
    assert refused.value.code == errors.CLUSTER_FILE_REFUSED
    assert str(source) in str(refused.value) and "rename it" in str(refused.value)


def test_two_files_of_the_same_cluster_name_have_their_own_work_dirs(tmp_path):
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(RAY_YAML)
    one, two = (resolve.load(str(tmp_path / n)).work_dir for n in ("a.yaml", "b.yaml"))
    assert one != two and one.name.startswith("lab-") and two.name.startswith("lab-")


def test_a_missing_file_exits_66_naming_it(tmp_path, capsys):
    missing = tmp_path / "nowhere.yaml"
    assert main(["get-head-ip", str(missing)]) == errors.CLUSTER_FILE_MISSING == 66
    err = capsys.readouterr().err
    assert f"{missing}: no such cluster file" in err and "provider: type: local" in err


def test_a_refused_file_exits_65_with_the_file_the_key_and_the_reason(tmp_path, capsys):
    path = tmp_path / "ray.yaml"
    path.write_text(RAY_YAML + "max_worker: 1\n")
    assert main(["get-worker-ips", "--no-state", str(path)]) == errors.CLUSTER_FILE_REFUSED
    err = capsys.readouterr().err
    assert str(path) in err and "max_worker" in err and "max_workers" in err  # the suggestion


def test_malformed_yaml_exits_65_with_the_line(tmp_path, capsys):
    path = tmp_path / "ray.yaml"
    path.write_text(RAY_YAML + "setup_commands: [unclosed\n")
    assert main(["get-head-ip", str(path)]) == errors.CLUSTER_FILE_REFUSED
    assert "malformed YAML" in capsys.readouterr().err


def test_get_head_ip_and_worker_ips_without_asking_the_head(tmp_path, capsys):
    path = tmp_path / "ray.yaml"
    path.write_text(RAY_YAML)
    assert main(["get-head-ip", str(path)]) == 0
    assert capsys.readouterr().out == "10.0.0.1\n"
    assert main(["get-worker-ips", "--no-state", str(path)]) == 0
    assert capsys.readouterr().out == "10.0.0.2\n10.0.0.3\n"


def test_node_selection(tmp_path):
    path = tmp_path / "ray.yaml"
    path.write_text(RAY_YAML)
    cluster = resolve.load(str(path)).cluster
    assert nodes.select(cluster) == ["10.0.0.1"]
    assert nodes.select(cluster, node="10.0.0.3") == ["10.0.0.3"]
    assert nodes.select(cluster, all_nodes=True) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    with pytest.raises(errors.CliError, match="not a machine of cluster lab"):
        nodes.select(cluster, node="10.0.0.9")
    with pytest.raises(errors.CliError, match="exclude each other"):
        nodes.select(cluster, node="10.0.0.2", all_nodes=True)
