"""up/down's pure parts: -e pairs, confirmation, the limits written for --min/--max-workers."""

from __future__ import annotations

import io

import pytest
import yaml

from onprem_ray_cli import errors, lifecycle, overrides, resolve

RAY_YAML = """\
cluster_name: lab
provider: {type: local, head_ip: 10.0.0.1, worker_ips: [10.0.0.2, 10.0.0.3, 10.0.0.4]}
auth: {ssh_user: ops}
min_workers: 3
"""
TYPED = """\
plugin: onprem.ray.cluster
cluster_name: typed
provider: {type: local, head_ip: 10.0.0.1}
auth: {ssh_user: ops}
head_node_type: head
available_node_types:
  head: {}
  cpu: {worker_ips: [10.0.0.2, 10.0.0.3], min_workers: 1}
  gpu: {worker_ips: [10.0.0.4], resources: {GPU: 1}}
"""


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_extra_vars_are_key_value_pairs():
    assert lifecycle.extra_vars(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    for bad in ("novalue", "=1", "a b=1"):
        with pytest.raises(errors.CliError, match="KEY=VALUE"):
            lifecycle.extra_vars([bad])


def test_confirmation_needs_yes_without_a_terminal(monkeypatch):
    lifecycle.confirm("Stop?", yes=True)  # nothing asked
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    with pytest.raises(errors.CliError, match="Pass --yes") as refused:
        lifecycle.confirm("Stop?", yes=False)
    assert refused.value.code == errors.USAGE


def test_a_terminal_answer_other_than_yes_does_nothing(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdin", Tty("n\n"))
    with pytest.raises(errors.CliError, match="nothing was done"):
        lifecycle.confirm("Stop?", yes=False)
    monkeypatch.setattr("sys.stdin", Tty("yes\n"))
    lifecycle.confirm("Stop?", yes=False)


def test_limits_of_a_ray_yaml_apply_to_its_one_node_type(tmp_path):
    path = tmp_path / "ray.yaml"
    path.write_text(RAY_YAML)
    written = overrides.write_inventory(resolve.load(str(path)), 0, 2)
    cluster = resolve.load(str(written)).cluster
    assert (cluster.min_workers, cluster.max_workers) == (0, 2)
    (only,) = cluster.node_types
    assert (only.min_workers, only.max_workers, only.ips) == (
        0, 2, ("10.0.0.2", "10.0.0.3", "10.0.0.4"))
    assert yaml.safe_load(written.read_text())["plugin"] == "onprem.ray.cluster"


def test_limits_of_a_typed_cluster_keep_each_types_own(tmp_path):
    path = tmp_path / "typed.cluster.yml"
    path.write_text(TYPED)
    cluster = resolve.load(str(overrides.write_inventory(resolve.load(str(path)),
                                                         None, 2))).cluster
    assert (cluster.min_workers, cluster.max_workers) == (0, 2)  # min: the file's
    assert {t.name: (t.min_workers, t.max_workers) for t in cluster.node_types} == {
        "head": (0, 0), "cpu": (1, 2), "gpu": (0, 1)}


def test_contradicting_limits_are_refused(tmp_path):
    path = tmp_path / "ray.yaml"
    path.write_text(RAY_YAML)
    with pytest.raises(errors.CliError, match="0 <= min <= max") as refused:
        overrides.write_inventory(resolve.load(str(path)), 3, 1)
    assert refused.value.code == errors.USAGE


class Recorder:
    """Stands in for runs.run_playbook: records what up/down would run."""

    def __init__(self):
        self.calls = []

    def __call__(self, work_dir, playbook, inventory, **options):
        from onprem_ray_cli.progress import Progress
        from onprem_ray_cli.runs import RunOutcome

        self.calls.append({"playbook": playbook, "inventory": inventory, **options})
        return RunOutcome(Progress(), "successful", 0, work_dir / "log")


@pytest.fixture
def recorder(monkeypatch):
    recorded = Recorder()
    monkeypatch.setattr("onprem_ray_cli.runs.run_playbook", recorded)
    return recorded


def test_the_options_of_up_and_down_become_the_playbooks_variables(tmp_path, recorder):
    from onprem_ray_cli.main import main

    path = tmp_path / "ray.yaml"
    path.write_text(RAY_YAML)
    assert main(["up", "--no-agent", "-e", "ray_wheelhouse_dir=/w", str(path)]) == 0
    assert main(["up", "--min-workers", "1", str(path)]) == 0
    assert main(["down", "--workers-only", "--yes", str(path)]) == 0
    no_agent, limits, down = recorder.calls
    assert no_agent["playbook"] == "onprem.ray.up" and no_agent["tags"] is None
    assert no_agent["extravars"] == {"ray_wheelhouse_dir": "/w", "head_agent_enabled": "false"}
    assert no_agent["inventory"].name == "cluster.yml"
    assert limits["inventory"].name == "limits.cluster.yml"
    assert resolve.load(str(limits["inventory"])).cluster.min_workers == 1
    assert down["playbook"] == "onprem.ray.down"
    assert down["extravars"] == {"ray_down_workers_only": "true"}
