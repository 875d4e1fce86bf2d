"""The collection's contracts with Ray's cluster format and the agent's state store. They need
Ray and the agent importable, as in the repository's environment (the plugins' own unit tests,
under tests/unit/plugins, also run in ansible-test's, which has neither)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from ansible_collections.onprem.ray.plugins.inventory.cluster import read_lifecycle_states
from ansible_collections.onprem.ray.plugins.plugin_utils import cluster_validation as validation

from onprem_ray_agent.model import Machine, MachineState
from onprem_ray_agent.store import StateStore


def test_every_key_of_rays_schema_is_honoured_or_refused():
    """Nothing of Ray 2.60's cluster format falls through unexamined."""
    spec = importlib.util.find_spec("ray")
    schema = json.loads(
        (Path(spec.origin).parent / "autoscaler" / "ray-schema.json").read_text())
    props = schema["properties"]
    node_type = props["available_node_types"]["patternProperties"][".*"]["properties"]
    sections = [
        (props, validation._TOP_HONOURED, validation._TOP_REFUSED),
        (props["provider"]["properties"], validation._PROVIDER_HONOURED,
         validation._PROVIDER_REFUSED),
        (props["auth"]["properties"], validation._AUTH_HONOURED, validation._AUTH_REFUSED),
        (props["docker"]["properties"], validation._DOCKER_KEYS, {}),
        (node_type, validation._NODE_TYPE_HONOURED, validation._NODE_TYPE_REFUSED),
        (node_type["docker"]["properties"], validation._NODE_TYPE_DOCKER_KEYS, {}),
    ]
    assert all(keys for keys, _honoured, _refused in sections)
    for keys, honoured, refused in sections:
        unexamined = set(keys) - set(honoured) - set(refused)
        assert not unexamined
        assert not set(honoured) & set(refused)


def test_the_inventory_plugin_reads_the_agents_own_store_while_the_agent_holds_it(tmp_path):
    """agent/onprem_ray_agent/store.py (WAL mode, lock held) -> the plugin's lifecycle groups."""
    store = StateStore.open(tmp_path / "state.db")
    try:
        store.put(Machine(ip="10.0.2.1", node_type="gpu", state=MachineState.ACTIVE),
                  Machine(ip="10.0.2.2", node_type="gpu", state=MachineState.RETIRING))
        states = read_lifecycle_states(str(tmp_path / "state.db"))
    finally:
        store.close()
    assert states == {"10.0.2.1": "active", "10.0.2.2": "retiring"}
