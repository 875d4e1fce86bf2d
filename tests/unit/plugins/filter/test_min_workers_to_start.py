"""The filter onprem.ray.min_workers_to_start, through Ansible's templating and hostvars of the
inventory plugin (as up.yml calls it)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleError
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from ansible.vars.hostvars import HostVars
from ansible.vars.manager import VariableManager

SOURCE = """\
plugin: onprem.ray.cluster
provider: {type: local, head_ip: 10.0.0.1}
auth: {ssh_user: ops}
min_workers: 3
head_node_type: gpu
available_node_types:
  gpu:
    worker_ips: [10.0.2.2, 10.0.2.1]
    resources: {GPU: 1}
  cpu:
    worker_ips: [10.0.1.10, 10.0.1.9, 10.0.1.8]
    min_workers: 1
"""
EXPRESSION = ("{{ groups.ray_workers | reject('in', groups.ray_head) "
              "| onprem.ray.min_workers_to_start(hostvars) }}")


def template(tmp_path, source: str, expression: str = EXPRESSION):
    path = tmp_path / "site.cluster.yml"
    path.write_text(source)
    loader = DataLoader()
    inventory = InventoryManager(loader=loader, sources=[str(path)])
    manager = VariableManager(loader=loader, inventory=inventory)
    variables = manager.get_vars() | {"hostvars": HostVars(inventory, manager, loader)}
    return Templar(loader=loader, variables=variables).template(trust_as_template(expression))


def test_type_minimum_first_then_the_cluster_on_cpu_before_gpu_in_address_order(tmp_path):
    assert template(tmp_path, SOURCE) == ["10.0.1.8", "10.0.1.9", "10.0.1.10"]


def test_gpu_machines_when_nothing_else_is_left(tmp_path):
    assert template(tmp_path, SOURCE.replace("min_workers: 3", "min_workers: 4")) == [
        "10.0.1.8", "10.0.1.9", "10.0.1.10", "10.0.2.1"]


def test_workers_without_the_plugins_variables_start_for_nothing(tmp_path):
    hosts = "all:\n  hosts:\n    10.0.0.2: {}\n    10.0.0.3: {}\n"
    assert template(tmp_path, hosts, "{{ groups.all | onprem.ray.min_workers_to_start("
                                     "hostvars) }}") == []


def test_a_bad_limit_names_the_host(tmp_path):
    hosts = "all:\n  hosts:\n    10.0.0.2: {ray_min_workers: many}\n"
    with pytest.raises(AnsibleError, match=r"10\.0\.0\.2: ray_min_workers = 'many'"):
        template(tmp_path, hosts, "{{ groups.all | onprem.ray.min_workers_to_start(hostvars) }}")
