"""The ray role's start flags and environment for Ray's ports and metrics, as Ansible renders
them from the role's defaults and vars (ansible-playbook on this machine, no target).

- Ray's gRPC servers get fixed ports (a firewall can name them), 0 leaving one to Ray;
- Ray's unauthenticated metrics servers are off unless asked for (ray_metrics_export, or a
  ray_metrics_export_port);
- the ports clash check of preflight finds a port given twice or inside the worker range.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "ray"
PLAYBOOK = """
- hosts: all
  gather_facts: false
  connection: local
  vars_files: ["{role}/defaults/main.yml", "{role}/vars/main.yml"]
  vars:
    ray_head_ip: 10.0.0.1
  tasks:
    - ansible.builtin.copy:
        dest: "{out}/{{{{ inventory_hostname }}}}.json"
        content: >-
          {{{{ {{'flags': ray__start_flags, 'env': ray__service_env,
               'clashes': ray__port_clashes, 'required': ray__required_ports}} | to_json }}}}
        mode: "0600"
"""
INVENTORY = {"all": {"children": {
    "ray_head": {"hosts": {"head": {"ansible_host": "10.0.0.1"}}},
    "ray_workers": {"hosts": {"worker": {"ansible_host": "10.0.0.2"}}}}}}
METRICS_OFF = {"RAY_enable_metrics_collection": "false"}
HEAD_METRICS_OFF = {"AUTOSCALER_METRIC_PORT": "-1", "DASHBOARD_METRIC_PORT": "-1"}


def render(tmp_path: Path, **extra: object) -> dict[str, dict]:
    """head and worker -> their flags, environment, port clashes and ports preflight checks."""
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(INVENTORY))
    (tmp_path / "play.yml").write_text(PLAYBOOK.format(role=ROLE, out=tmp_path))
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i",
         str(tmp_path / "inventory.yml"), str(tmp_path / "play.yml"),
         "-e", f"@{tmp_path / 'extra.json'}",
         "-e", f"ansible_python_interpreter={sys.executable}"],
        capture_output=True, text=True, env=env, check=False, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {host: json.loads((tmp_path / f"{host}.json").read_text())
            for host in ("head", "worker")}


def test_by_default_rays_grpc_ports_are_fixed_and_its_metrics_off(tmp_path: Path) -> None:
    nodes = render(tmp_path)
    for host, node in nodes.items():
        flags = node["flags"]
        assert {"--node-manager-port=6380", "--object-manager-port=6381",
                "--dashboard-agent-grpc-port=6382", "--min-worker-port=10002",
                "--max-worker-port=19999"} <= set(flags), (host, flags)
        assert not [f for f in flags if f.startswith("--metrics-export-port")], flags
        assert {6380, 6381, 6382} <= set(node["required"]), node["required"]
        assert node["clashes"] == [], node["clashes"]
    head, worker = nodes["head"]["env"], nodes["worker"]["env"]
    assert METRICS_OFF.items() | HEAD_METRICS_OFF.items() <= head.items(), head
    assert METRICS_OFF.items() <= worker.items(), worker
    assert not HEAD_METRICS_OFF.keys() & worker.keys(), worker  # only the head runs them


@pytest.mark.parametrize("asked", [{"ray_metrics_export": True},
                                   {"ray_metrics_export_port": 9100}])
def test_metrics_asked_for_are_served(tmp_path: Path, asked: dict) -> None:
    nodes = render(tmp_path, **asked)
    for node in nodes.values():
        assert not (METRICS_OFF.keys() | HEAD_METRICS_OFF.keys()) & node["env"].keys(), node
        exported = "--metrics-export-port=9100" in node["flags"]
        assert exported == ("ray_metrics_export_port" in asked), node["flags"]


def test_a_port_set_to_0_is_left_to_ray(tmp_path: Path) -> None:
    nodes = render(tmp_path, ray_node_manager_port=0, ray_min_worker_port=0,
                   ray_max_worker_port=0)
    flags = nodes["worker"]["flags"]
    assert not [f for f in flags if f.startswith("--node-manager-port")], flags
    assert {"--object-manager-port=6381", "--min-worker-port=0",
            "--max-worker-port=0"} <= set(flags), flags


@pytest.mark.parametrize(("extra", "head", "worker"), [
    ({"ray_min_worker_port": 6000}, ["ray_port=6379", "ray_client_server_port=10001",
                                     "ray_dashboard_port=8265", "ray_node_manager_port=6380",
                                     "ray_object_manager_port=6381",
                                     "ray_dashboard_agent_grpc_port=6382"],
     ["ray_node_manager_port=6380", "ray_object_manager_port=6381",
      "ray_dashboard_agent_grpc_port=6382"]),
    ({"ray_object_manager_port": 6379}, ["ray_port=6379", "ray_object_manager_port=6379"], []),
    ({"ray_max_worker_port": 60000}, ["Ray's dashboard agent HTTP port=52365"],
     ["Ray's dashboard agent HTTP port=52365"]),
])
def test_preflight_finds_a_port_given_twice_or_in_the_worker_range(
        tmp_path: Path, extra: dict, head: list[str], worker: list[str]) -> None:
    nodes = render(tmp_path, **extra)
    assert (nodes["head"]["clashes"], nodes["worker"]["clashes"]) == (head, worker)


def test_custom_start_commands_leave_the_fixed_ports_unchecked(tmp_path: Path) -> None:
    nodes = render(tmp_path, ray_start_ray_commands=["ray start --address=$RAY_HEAD_IP:6379"])
    assert nodes["worker"]["required"] == [0], nodes["worker"]["required"]
    assert METRICS_OFF.items() <= nodes["worker"]["env"].items()
