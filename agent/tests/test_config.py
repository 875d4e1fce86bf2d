"""The cluster file -> Config, through the collection's shared validation."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from onprem_ray_agent import config as config_module
from onprem_ray_agent.config import ConfigError, collection_dir, load_config

REPO = Path(__file__).resolve().parents[2]

TYPED = """
    plugin: onprem.ray.cluster
    provider: {type: local, head_ip: 10.0.0.1}
    auth: {ssh_user: ops}
    min_workers: 1
    max_workers: 4
    upscaling_speed: 2.5
    idle_timeout_minutes: 3
    head_node_type: head
    available_node_types:
      head: {resources: {CPU: 0}}
      cpu:
        worker_ips: [10.0.1.1-10.0.1.3]
        resources: {CPU: 4}
        min_workers: 1
      gpu:
        worker_ips: [10.0.2.1]
        resources: {CPU: 8, GPU: 1}
        max_workers: 1
        idle_timeout_s: 45
"""

RAY_STYLE = """
    cluster_name: plain
    provider: {type: local, head_ip: 10.0.0.1, worker_ips: [10.0.1.1, 10.0.1.2]}
    auth: {ssh_user: ops}
"""


def write(tmp_path: Path, text: str, name: str = "cluster.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_the_model_comes_from_the_collection_the_namespace_finds():
    """No path logic: the collection is wherever `ansible_collections.onprem.ray` imports
    from (here the checkout, linked into .cache/collections by scripts/setup-host)."""
    from ansible_collections.onprem.ray.plugins.plugin_utils import cluster_file

    assert collection_dir() == REPO
    assert Path(cluster_file.__file__).resolve() == REPO / "plugins/plugin_utils/cluster_file.py"
    assert not hasattr(config_module, "COLLECTION_DIR_ENV")


def test_node_types_limits_and_speeds_come_from_the_file(tmp_path):
    loaded = load_config(write(tmp_path, TYPED))
    config = loaded.config
    assert config.head_ip == "10.0.0.1"
    assert config.head_node_type == "head"
    assert (config.min_workers, config.max_workers) == (1, 4)
    assert config.upscaling_speed == 2.5
    assert config.idle_timeout_s == 180
    types = {t.name: t for t in config.node_types}
    assert types["cpu"].ips == ("10.0.1.1", "10.0.1.2", "10.0.1.3")
    assert dict(types["cpu"].resources) == {"CPU": 4.0}
    assert (types["cpu"].min_workers, types["cpu"].max_workers) == (1, 3)
    assert (types["gpu"].max_workers, dict(types["gpu"].resources)) == (1, {"CPU": 8, "GPU": 1})
    assert types["head"].ips == ()
    assert loaded.pool == {"10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.2.1"}


def test_a_node_types_idle_timeout_overrides_the_clusters(tmp_path):
    """Ray's per-type idle_timeout_s (seconds); a type without one: idle_timeout_minutes."""
    config = load_config(write(tmp_path, TYPED)).config
    types = {t.name: t for t in config.node_types}
    assert types["gpu"].idle_timeout_s == 45.0
    assert types["cpu"].idle_timeout_s is None
    assert config.idle_timeout_of("gpu") == 45.0
    assert config.idle_timeout_of("cpu") == config.idle_timeout_of("head") == 180.0


def test_a_ray_cluster_yaml_gets_rays_one_node_type(tmp_path):
    config = load_config(write(tmp_path, RAY_STYLE)).config
    (only,) = config.node_types
    assert only.ips == ("10.0.1.1", "10.0.1.2")
    # Ray's local provider: min_workers defaults to every worker
    assert (config.min_workers, config.max_workers) == (2, 2)
    assert config.head_node_type == only.name


def test_agent_settings_are_passed_through(tmp_path):
    config = load_config(write(tmp_path, RAY_STYLE), provision_timeout_s=42.0).config
    assert config.provision_timeout_s == 42.0


@pytest.mark.parametrize(("text", "named"), [
    (TYPED.replace("upscaling_speed: 2.5", "upscaling_speed: -1"), "upscaling_speed = -1"),
    (TYPED.replace("max_workers: 1\n", "max_workers: 7\n"), "available_node_types.gpu"),
    (TYPED.replace("idle_timeout_s: 45", "idle_timeout_s: -45"),
     "available_node_types.gpu.idle_timeout_s = -45: must be a number >= 0"),
    (RAY_STYLE + "    agent: {provision_timeout_s: 5}\n", "agent"),
    ("provider: [\n", "malformed YAML"),
])
def test_a_refused_file_names_the_file_the_key_and_the_value(tmp_path, text, named):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message
    assert named in message


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path / "nope.yml")


def test_a_machine_that_left_the_file_is_reached_as_a_worker_of_its_type(tmp_path):
    loaded = load_config(write(tmp_path, TYPED))
    hostvars = loaded.hostvars_of_leaving("10.0.2.9", "gpu")
    assert hostvars["ansible_host"] == "10.0.2.9"
    assert hostvars["ansible_user"] == "ops"
    assert (hostvars["ray_node_type"], hostvars["ray_head_ip"]) == ("gpu", "10.0.0.1")
    # its node type is gone too: it is reached as the file reaches the head's type
    assert loaded.hostvars_of_leaving("10.0.9.9", "tpu")["ray_node_type"] == "head"
    assert "10.0.2.9" not in loaded.pool


def test_node_type_labels_reach_the_decision(tmp_path):
    labelled = TYPED.replace("        resources: {CPU: 8, GPU: 1}\n",
                             "        resources: {CPU: 8, GPU: 1}\n"
                             "        labels: {accelerator: a100, zone: rack-2}\n")
    config = load_config(write(tmp_path, labelled)).config
    assert config.node_type("gpu").labels == {"accelerator": "a100", "zone": "rack-2"}
    assert config.node_type("cpu").labels == {}
