"""The filter onprem.ray.head_cluster_files through Ansible's templating, as roles/head calls it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleError
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

REPO = Path(__file__).resolve().parents[4]
CALL = ("{{ source | onprem.ray.head_cluster_files('/etc/onprem-ray/cluster.yml', '/home/ops', "
        "'/home/ops/.ssh/key', '/home/ops/.ssh/known_hosts') }}")


def template(source: Path):
    templar = Templar(loader=DataLoader(), variables={"source": str(source)})
    return templar.template(trust_as_template(CALL))


def test_the_ray_yaml_site_gives_two_files_with_the_heads_paths():
    files = template(REPO / "inventories" / "ray-yaml" / "cluster.yml")
    assert [item["path"] for item in files] == ["/etc/onprem-ray/ray-cluster.yaml",
                                                "/etc/onprem-ray/cluster.yml"]
    auth = yaml.safe_load(files[0]["content"])["auth"]
    assert auth == {"ssh_user": "ubuntu", "ssh_private_key": "/home/ops/.ssh/key",
                    "ssh_known_hosts_file": "/home/ops/.ssh/known_hosts"}


def test_a_refused_source_fails_the_template_with_the_reason(tmp_path):
    source = tmp_path / "site.cluster.yml"
    source.write_text("plugin: onprem.ray.cluster\nhead_ip: 10.0.0.1\nworker_ips: []\n"
                      "auth: {ssh_user: ops}\nmax_worker: 1\n")
    with pytest.raises(AnsibleError, match=r"head_cluster_files: .*max_worker = 1: unknown key"):
        template(source)
