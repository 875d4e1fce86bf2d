"""The inventory plugin onprem.ray.cluster, loaded through Ansible's own plugin loader."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest
from ansible.errors import AnsibleParserError
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.inventory import BaseInventoryPlugin
from ansible.plugins.loader import init_plugin_loader, inventory_loader
from ansible.template import Templar, trust_as_template
from ansible.utils.collection_loader import AnsibleCollectionConfig

REPO = Path(__file__).resolve().parents[4]

SOURCE = """\
plugin: onprem.ray.cluster
cluster_name: lab
provider:
  type: local
  head_ip: 10.0.0.1
  worker_ips: [10.0.0.2]
auth: {ssh_user: ops}
head_node_type: head
available_node_types:
  head: {}
  gpu:
    worker_ips: [10.0.2.0/30]
    resources: {GPU: 8}
    labels: {rack: r7}
    max_workers: 1
"""


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """The plugin as Ansible finds it: this checkout linked in as collection onprem.ray."""
    playbook_dir = tmp_path_factory.mktemp("playbook")
    link = playbook_dir / "collections" / "ansible_collections" / "onprem" / "ray"
    link.parent.mkdir(parents=True)
    link.symlink_to(REPO)
    if AnsibleCollectionConfig.collection_finder is None:
        init_plugin_loader([str(playbook_dir / "collections")])
    else:  # another test module set the loader up: add ours the way a playbook dir does
        AnsibleCollectionConfig.playbook_paths = [str(playbook_dir)]


@pytest.fixture
def plugin(collection):
    """A new instance, as the loader makes one for each inventory source."""
    found = inventory_loader.get("onprem.ray.cluster")
    assert found is not None, "onprem.ray.cluster not found by Ansible's plugin loader"
    return found


def parse(plugin, source: Path) -> InventoryData:
    inventory = InventoryData()
    plugin.parse(inventory, DataLoader(), str(source), cache=False)
    return inventory


def write(tmp_path: Path, text: str, name: str = "lab.cluster.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def members(inventory: InventoryData, group: str) -> list[str]:
    return [host.name for host in inventory.groups[group].get_hosts()]


@pytest.mark.parametrize(("name", "wanted"), [
    ("cluster.yml", True), ("site.cluster.yml", True), ("lab.cluster.yaml", True),
    ("cluster.json", False), ("hosts.yml", False), ("cluster.yml.bak", False),
])
def test_verify_file_wants_cluster_files_only(plugin, tmp_path, name, wanted):
    assert plugin.verify_file(str(write(tmp_path, SOURCE, name))) is wanted


def test_a_missing_file_is_not_wanted(plugin, tmp_path):
    assert not plugin.verify_file(str(tmp_path / "cluster.yml"))


def test_groups(plugin, tmp_path):
    inventory = parse(plugin, write(tmp_path, SOURCE))
    assert members(inventory, "ray_head") == ["10.0.0.1"]
    assert members(inventory, "ray_workers") == ["10.0.0.2", "10.0.2.1", "10.0.2.2"]
    assert members(inventory, "ray_node_type_head") == ["10.0.0.1", "10.0.0.2"]
    assert members(inventory, "ray_node_type_gpu") == ["10.0.2.1", "10.0.2.2"]
    assert not any(name.startswith("ray_lifecycle_") for name in inventory.groups)


def test_hostvars(plugin, tmp_path):
    source = write(tmp_path, SOURCE)
    inventory = parse(plugin, source)
    gpu = inventory.get_host("10.0.2.2").get_vars()
    assert gpu["ansible_host"] == "10.0.2.2"
    assert gpu["ansible_user"] == "ops"
    assert gpu["ansible_ssh_common_args"] == "-o StrictHostKeyChecking=accept-new"
    assert gpu["ray_cluster_file"] == str(source)
    assert gpu["ray_head_ip"] == "10.0.0.1"
    assert gpu["ray_node_type"] == "gpu"
    assert gpu["ray_resources"] == {"GPU": 8}
    assert gpu["ray_labels"] == {"rack": "r7"}
    assert (gpu["ray_node_type_min_workers"], gpu["ray_node_type_max_workers"]) == (0, 1)
    assert (gpu["ray_min_workers"], gpu["ray_max_workers"]) == (0, 3)
    head = inventory.get_host("10.0.0.1").get_vars()
    assert head["ray_node_type"] == "head"
    assert head["ray_resources"] == {}


def test_values_from_the_file_are_never_templated(plugin, tmp_path):
    source = write(tmp_path, SOURCE + "setup_commands: [\"echo {{ lookup('pipe', 'id') }}\"]\n"
                   "cluster_synced_files: ['/srv/{{ 7 * 6 }}']\n")
    hostvars = parse(plugin, source).get_host("10.0.0.2").get_vars()
    templar = Templar(loader=DataLoader(), variables=hostvars)
    assert templar.template(hostvars["ray_setup_commands"]) == [
        "echo {{ lookup('pipe', 'id') }}"]
    assert templar.template(hostvars["ray_cluster_synced_files"]) == ["/srv/{{ 7 * 6 }}"]
    # The same text, trusted, would be evaluated: the check above is not vacuous.
    assert templar.template(trust_as_template("/srv/{{ 7 * 6 }}")) == "/srv/42"


def test_constructable_options(plugin, tmp_path):
    source = write(tmp_path, SOURCE + """\
strict: true
compose:
  ray_gpus: ray_resources.GPU | default(0)
groups:
  big: ray_node_type == 'gpu'
keyed_groups:
  - key: ray_labels.rack | default('none')
    prefix: rack
""")
    inventory = parse(plugin, source)
    assert inventory.get_host("10.0.2.1").get_vars()["ray_gpus"] == 8
    assert members(inventory, "big") == ["10.0.2.1", "10.0.2.2"]
    assert members(inventory, "rack_r7") == ["10.0.2.1", "10.0.2.2"]
    assert members(inventory, "rack_none") == ["10.0.0.1", "10.0.0.2"]


def test_strict_compose_errors_stop_parsing(plugin, tmp_path):
    source = write(tmp_path, SOURCE + "strict: true\ncompose:\n  x: no_such_var.attr\n")
    with pytest.raises(Exception, match="Could not set x"):
        parse(plugin, source)


def test_a_refused_file_is_a_parser_error_naming_file_key_and_value(plugin, tmp_path):
    source = write(tmp_path, SOURCE.replace("max_workers: 1", "max_workers: 5"))
    with pytest.raises(AnsibleParserError) as caught:
        parse(plugin, source)
    assert str(caught.value).startswith(
        f"{source}: available_node_types.gpu.max_workers = 5: is above the 2 worker machines")


def test_malformed_yaml_is_reported_with_its_position(plugin, tmp_path):
    source = write(tmp_path, "plugin: onprem.ray.cluster\nauth: {ssh_user: ops\n")
    with pytest.raises(AnsibleParserError, match=r"line 3 column 1: malformed YAML"):
        parse(plugin, source)


def test_a_source_of_another_plugin_is_declined(plugin, tmp_path):
    source = write(tmp_path, "plugin: ansible.builtin.constructed\n")
    with pytest.raises(AnsibleParserError, match="Incorrect plugin name"):
        parse(plugin, source)


def test_a_ray_yaml_source(plugin, tmp_path):
    write(tmp_path, "provider: {type: local, head_ip: 10.0.0.1, worker_ips: [10.0.0.2]}\n"
          "auth: {ssh_user: ops}\nmin_workers: 0\n", name="ray.yaml")
    source = write(tmp_path, "plugin: onprem.ray.cluster\nray_cluster_yaml: ray.yaml\n")
    inventory = parse(plugin, source)
    worker = inventory.get_host("10.0.0.2").get_vars()
    assert worker["ray_cluster_file"] == str(source)
    assert worker["ray_node_type_min_workers"] == 0


def test_the_options_are_the_keys_the_validation_skips(plugin, tmp_path):
    """cluster_file.INVENTORY_KEYS must list exactly the plugin's options."""
    from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_file import INVENTORY_KEYS

    parse(plugin, write(tmp_path, SOURCE))
    assert set(plugin._options) == INVENTORY_KEYS


def test_populate_is_a_seam_for_a_model_built_in_python(plugin):
    from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_validation import validate

    BaseInventoryPlugin.parse(plugin, InventoryData(), DataLoader(), "seam.cluster.yml")
    plugin.set_options(direct={"plugin": "onprem.ray.cluster"})
    cluster = validate(
        {"head_ip": "fd00::1", "worker_ips": ["fd00::2-fd00::3"], "auth": {"ssh_user": "o"}})
    plugin._populate(cluster, {"fd00::3": "spare"})
    assert members(plugin.inventory, "ray_workers") == ["fd00::2", "fd00::3"]
    assert members(plugin.inventory, "ray_lifecycle_spare") == ["fd00::3"]


# ---------------------------------------------------------------- lifecycle overlay


def make_store(path: Path, rows: list[tuple[str, str]]) -> None:
    """The agent's table as the plugin relies on it: machines(ip TEXT PRIMARY KEY, state...)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE machines (ip TEXT PRIMARY KEY, node_type TEXT, "
                   "state TEXT NOT NULL, since REAL)")
        db.executemany("INSERT INTO machines (ip, node_type, state, since) VALUES (?, '', ?, 0)",
                       rows)
        db.commit()


def test_lifecycle_groups_from_the_state_store(plugin, tmp_path):
    make_store(tmp_path / "state.db", [("10.0.0.2", "active"), ("10.0.2.1", "spare"),
                                       ("10.0.2.2", "quarantined"), ("10.9.9.9", "active"),
                                       ("10.0.0.1", "Not A State!")])
    source = write(tmp_path, SOURCE + "state_store: state.db\n")
    inventory = parse(plugin, source)
    assert members(inventory, "ray_lifecycle_active") == ["10.0.0.2"]  # 10.9.9.9: not in the file
    assert members(inventory, "ray_lifecycle_spare") == ["10.0.2.1"]
    assert members(inventory, "ray_lifecycle_quarantined") == ["10.0.2.2"]
    assert inventory.get_host("10.0.2.1").get_vars()["ray_lifecycle_state"] == "spare"
    assert "ray_lifecycle_state" not in inventory.get_host("10.0.0.1").get_vars()
    assert (tmp_path / "state.db").stat().st_size > 0


def test_the_state_store_path_can_come_from_the_environment(plugin, tmp_path, monkeypatch):
    make_store(tmp_path / "elsewhere.db", [("10.0.0.2", "draining")])
    monkeypatch.setenv("ONPREM_RAY_STATE_STORE", str(tmp_path / "elsewhere.db"))
    inventory = parse(plugin, write(tmp_path, SOURCE))
    assert members(inventory, "ray_lifecycle_draining") == ["10.0.0.2"]


def test_a_missing_state_store_is_not_an_error(plugin, tmp_path, capfd):
    inventory = parse(plugin, write(tmp_path, SOURCE + "state_store: none/state.db\n"))
    assert members(inventory, "ray_head") == ["10.0.0.1"]
    assert "state store" not in capfd.readouterr().err


@pytest.mark.parametrize("content", [b"not a database at all" * 100, b""])
def test_an_unreadable_state_store_is_a_warning(plugin, tmp_path, capfd, content):
    (tmp_path / "state.db").write_bytes(content)
    inventory = parse(plugin, write(tmp_path, SOURCE + "state_store: state.db\n"))
    assert members(inventory, "ray_workers") == ["10.0.0.2", "10.0.2.1", "10.0.2.2"]
    assert not any(name.startswith("ray_lifecycle_") for name in inventory.groups)
    assert "state store" in capfd.readouterr().err
