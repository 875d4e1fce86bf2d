"""missing_groups_message: why the inventory holds no cluster, for the playbooks' first play."""

from __future__ import annotations

from ansible_collections.onprem.ray.plugins.plugin_utils.inventory_check import (
    missing_groups_message,
)

GOOD = "plugin: onprem.ray.cluster\nhead_ip: 10.0.0.1\nworker_ips: []\nauth: {ssh_user: o}\n"


def test_groups_with_hosts_need_no_message():
    assert missing_groups_message({"ray_head": ["10.0.0.1"]}, ["ray_head"], []) is None


def test_each_refused_cluster_file_of_a_directory_is_named_with_its_reason(tmp_path):
    site = tmp_path / "site"
    (site / "group_vars").mkdir(parents=True)
    (site / "a.cluster.yml").write_text(GOOD + "max_worker: 1\n")
    (site / "b.cluster.yaml").write_text(GOOD.replace("head_ip", "hed_ip"))
    (site / "group_vars" / "all.cluster.yml").write_text("not: a source\n")
    (site / "hosts.ini").write_text("[web]\n10.0.0.9\n")
    message = missing_groups_message({"ray_head": []}, ["ray_head", "ray_workers"],
                                     [str(site)])
    assert message.startswith("no host in ray_head and ray_workers: ")
    assert f"the inventory source {site / 'a.cluster.yml'} did not parse" in message
    assert "max_worker = 1: unknown key" in message
    assert f"the inventory source {site / 'b.cluster.yaml'} did not parse" in message
    assert "all.cluster.yml" not in message


def test_a_cluster_file_that_parsed_but_lacks_a_group_says_so(tmp_path):
    source = tmp_path / "site.cluster.yml"
    source.write_text(GOOD)
    message = missing_groups_message({"ray_head": ["10.0.0.1"], "ray_workers": []},
                                     ["ray_head", "ray_workers"], [str(source)])
    assert message == f"no host in ray_workers: the cluster files {source} parsed, but give none"


def test_sources_without_a_cluster_file_are_listed(tmp_path):
    message = missing_groups_message({}, ["ray_head"], ["10.0.0.5,", str(tmp_path / "gone")])
    assert message == (f"no host in ray_head: no cluster file among the inventory sources "
                       f"(10.0.0.5,, {tmp_path / 'gone'}); pass one with -i (a file named "
                       "*cluster.yml with plugin: onprem.ray.cluster)")
