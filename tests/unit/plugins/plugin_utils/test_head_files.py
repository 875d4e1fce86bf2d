"""The head's copy of the cluster file: rendered from the model, it validates on the head to
the same cluster, with the head's paths; both forms (inline, and a source naming a Ray YAML)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_file import load_cluster_file
from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_model import (
    Auth,
    ClusterConfigError,
)
from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_validation import validate
from ansible_collections.onprem.ray.plugins.plugin_utils.head_files import (
    head_cluster_files,
    ray_cluster_yaml,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[4]
HOME = "/home/ops"
KEY = "/home/ops/.ssh/onprem_ray_pool_key"
KNOWN = "/home/ops/.ssh/known_hosts"
PATHS = {"home": HOME, "ssh_private_key": KEY, "ssh_known_hosts_file": KNOWN}

INLINE = """\
plugin: onprem.ray.cluster
state_store: state.db
keyed_groups:
  - key: ray_labels.rack | default('none')
    prefix: rack
cluster_name: lab
provider:
  type: local
  head_ip: 10.0.0.1
  external_head_ip: 203.0.113.7
  worker_ips: [10.0.0.2]
auth:
  ssh_user: ops
  ssh_proxy_command: ssh -W %h:%p jump
min_workers: 1
head_node_type: head
available_node_types:
  head: {}
  gpu:
    worker_ips: [10.0.2.0/30, gpu-big.lab]
    resources: {GPU: 8}
    labels: {rack: r7}
    max_workers: 2
    idle_timeout_s: 120
    worker_setup_commands: [nvidia-smi]
file_mounts:
  ~/data: ./data
  /opt/app: /srv/app
setup_commands: [mkdir -p ~/jobs]
"""


def on_head(cluster, source: str, ray_yaml: str | None = None):
    """What the head's agent must get from its copy: the cluster, with the head's paths."""
    return dataclasses.replace(
        cluster, source=source, ray_cluster_yaml=ray_yaml, head_ssh_address=cluster.head_ip,
        auth=Auth(cluster.auth.ssh_user, KEY, KNOWN, cluster.auth.ssh_proxy_command),
        file_mounts={remote: HOME + remote[1:] if remote.startswith("~") else remote
                     for remote in cluster.file_mounts})


def write_on_head(tmp_path: Path, files: list[dict]) -> Path:
    """The files as the head gets them, under tmp_path; returns the inventory source."""
    for item in files:
        target = tmp_path / item["path"].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(item["content"])
    return tmp_path / files[-1]["path"].lstrip("/")


def test_an_inline_source_gives_one_file_the_head_validates_to_the_same_cluster(tmp_path):
    source = tmp_path / "site.cluster.yml"
    source.write_text(INLINE)
    files = head_cluster_files(str(source), "/etc/onprem-ray/cluster.yml", **PATHS)
    assert [item["path"] for item in files] == ["/etc/onprem-ray/cluster.yml"]
    copy = write_on_head(tmp_path / "head", files)
    text = copy.read_text()
    assert text.startswith(f"# Managed by Ansible (onprem.ray): the head's copy of {source},")
    data = yaml.safe_load(text)
    assert data["plugin"] == "onprem.ray.cluster"
    assert "state_store" not in data  # the agent keeps its own
    assert data["keyed_groups"] == [{"key": "ray_labels.rack | default('none')",
                                     "prefix": "rack"}]
    original = load_cluster_file(str(source))
    assert load_cluster_file(str(copy), check_files=False) == on_head(original, str(copy))


def test_the_heads_copy_keeps_a_node_types_idle_timeout(tmp_path):
    """The agent on the head reads Ray's per-type idle_timeout_s from its copy; a type
    without one gets none, so that the cluster's idle_timeout_minutes applies to it."""
    source = tmp_path / "site.cluster.yml"
    source.write_text(INLINE)
    files = head_cluster_files(str(source), "/etc/onprem-ray/cluster.yml", **PATHS)
    types = yaml.safe_load(files[0]["content"])["available_node_types"]
    assert types["gpu"]["idle_timeout_s"] == 120
    assert "idle_timeout_s" not in types["head"]
    copy = load_cluster_file(str(write_on_head(tmp_path / "head", files)), check_files=False)
    assert (copy.node_type("gpu").idle_timeout_s, copy.node_type("head").idle_timeout_s) == (
        120, None)


def test_a_source_naming_a_ray_yaml_gives_the_ray_yaml_and_a_source_naming_it(tmp_path):
    source = REPO / "inventories" / "ray-yaml" / "cluster.yml"
    files = head_cluster_files(str(source), "/etc/onprem-ray/cluster.yml", **PATHS)
    assert [item["path"] for item in files] == ["/etc/onprem-ray/ray-cluster.yaml",
                                                "/etc/onprem-ray/cluster.yml"]
    copy = write_on_head(tmp_path, files)
    assert yaml.safe_load(copy.read_text()) == {"plugin": "onprem.ray.cluster",
                                                "ray_cluster_yaml": "ray-cluster.yaml"}
    ray_yaml = tmp_path / "etc" / "onprem-ray" / "ray-cluster.yaml"
    assert "plugin" not in yaml.safe_load(ray_yaml.read_text())  # Ray's own format
    original = load_cluster_file(str(source))
    assert load_cluster_file(str(copy), check_files=False) == on_head(
        original, str(copy), str(ray_yaml))


def test_a_refused_source_gives_no_copy(tmp_path):
    source = tmp_path / "site.cluster.yml"
    source.write_text(INLINE + "max_worker: 3\n")
    with pytest.raises(ClusterConfigError, match="max_worker = 3: unknown key"):
        head_cluster_files(str(source), "/etc/onprem-ray/cluster.yml", **PATHS)


CLUSTERS = [
    # Ray's local form: one implicit node type, min/max at the top
    {"provider": {"type": "local", "head_ip": "10.0.0.1",
                  "worker_ips": ["10.0.0.2-10.0.0.5"]},
     "auth": {"ssh_user": "ops"}, "max_workers": 3},
    {"provider": {"type": "local", "head_ip": "10.0.0.1", "worker_ips": ["10.0.0.2"]},
     "auth": {"ssh_user": "ops"}},
    # a node type named as Ray's implicit one, with limits of its own
    {"head_ip": "10.0.0.1", "auth": {"ssh_user": "ops"}, "min_workers": 0,
     "head_node_type": "local.cluster.node",
     "available_node_types": {"local.cluster.node": {"worker_ips": ["10.0.0.2", "10.0.0.3"],
                                                     "min_workers": 2}}},
    # the same, with an idle timeout of its own (which Ray's local form cannot say)
    {"head_ip": "10.0.0.1", "auth": {"ssh_user": "ops"},
     "head_node_type": "local.cluster.node",
     "available_node_types": {"local.cluster.node": {"worker_ips": ["10.0.0.2"],
                                                     "idle_timeout_s": 30}}},
]


@pytest.mark.parametrize("data", CLUSTERS)
def test_rays_forms_keep_their_limits(data):
    cluster = validate(data, source="/site/x.cluster.yml", check_files=False)
    rendered = ray_cluster_yaml(cluster, **PATHS)
    again = validate(rendered, source="/site/x.cluster.yml", check_files=False)
    assert again == on_head(cluster, "/site/x.cluster.yml")


@st.composite
def accepted_clusters(draw):
    """Accepted clusters of every shape the validation knows (node types, ranges, names)."""
    count = draw(st.integers(1, 3))
    types = {}
    for index in range(count):
        ips = draw(st.sampled_from([[], [f"10.0.{index}.1"], [f"10.0.{index}.1-10.0.{index}.4"],
                                    [f"10.0.{index}.0/30", f"n{index}.lab"]]))
        spec = {"worker_ips": ips}
        if draw(st.booleans()):
            spec["resources"] = {"CPU": draw(st.integers(0, 8))}
        if draw(st.booleans()):
            spec["min_workers"] = draw(st.integers(0, 1))
        if draw(st.booleans()):
            spec["idle_timeout_s"] = draw(st.one_of(st.integers(0, 600), st.floats(0, 1e5)))
        types[f"t{index}"] = spec
    head_type = draw(st.sampled_from(sorted(types)))
    for name, spec in types.items():
        if not spec["worker_ips"] and name != head_type:
            spec["worker_ips"] = [f"spare-{name}.lab"]
    data = {"cluster_name": "gen", "provider": {"type": "local", "head_ip": "10.9.0.1"},
            "auth": {"ssh_user": "ops"}}
    if draw(st.booleans()):
        data |= {"head_node_type": head_type, "available_node_types": types}
    else:
        data["provider"]["worker_ips"] = [ip for spec in types.values()
                                          for ip in spec["worker_ips"]]
    if draw(st.booleans()):
        data["file_mounts"] = {"~/a": "/srv/a", "/opt/b": "b"}
    return data


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(accepted_clusters())
def test_every_accepted_cluster_survives_the_copy(data):
    try:
        cluster = validate(data, source="/site/gen.cluster.yml", check_files=False)
    except ClusterConfigError:
        return  # the generator's limits may clash: such files never reach the copy
    rendered = yaml.safe_load(yaml.safe_dump(ray_cluster_yaml(cluster, **PATHS)))
    again = validate(rendered, source="/site/gen.cluster.yml", check_files=False)
    assert again == on_head(cluster, "/site/gen.cluster.yml")


def test_the_generator_reaches_both_forms_and_accepted_files():
    forms = {"implicit": 0, "typed": 0, "accepted": 0}

    @settings(max_examples=150, deadline=None)
    @given(accepted_clusters())
    def count(data):
        forms["typed" if "available_node_types" in data else "implicit"] += 1
        try:
            validate(data, check_files=False)
            forms["accepted"] += 1
        except ClusterConfigError:
            pass

    count()
    assert min(forms.values()) >= 30, forms
