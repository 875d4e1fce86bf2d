"""Fuzzing the `plan` snapshot decoder (`codec.plan_input_from_dict`, `plan.load`): any input
gets a decision or a FormatError naming the place, never a crash; an accepted snapshot is
consistent (checked here independently) and round-trips; decide() runs on every accepted one.

Inputs are the example snapshot with one part replaced, removed or added (so that both sides
are reached: each property asserts a floor on accepted and refused inputs and prints the
counts), plus arbitrary JSON and arbitrary bytes.
"""

from __future__ import annotations

import copy
import json
import math
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from onprem_ray_agent.codec import FormatError, machine_to_dict, plan_input_from_dict
from onprem_ray_agent.model import MachineState, RayNodeState
from onprem_ray_agent.plan import load, plan

EXAMPLE = json.loads((Path(__file__).resolve().parents[1] / "examples" / "plan-snapshot.json")
                     .read_text())
SETTINGS = settings()  # the profile of the root conftest.py
FLOOR = 0.2

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                    st.sampled_from(["10.0.0.11", "10.0.0.1", "spare", "ALIVE", "PACK", "cpu"]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                           max_leaves=12)


def paths(value, prefix=()):
    """Every place in a JSON value: (path, value)."""
    yield prefix, value
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths(child, (*prefix, index))


@st.composite
def mutated_snapshots(draw):
    """The example with up to 3 edits: a value replaced, a key removed, a key added."""
    data = copy.deepcopy(EXAMPLE)
    for _ in range(draw(st.integers(0, 3))):
        places = [p for p, _ in paths(data) if p]
        path = draw(st.sampled_from(places))
        parent = data
        for step in path[:-1]:
            parent = parent[step]
        how = draw(st.sampled_from(["tweak", "tweak", "tweak", "replace", "remove", "add"]))
        if how == "tweak":  # a value of the same kind: often still valid, sometimes not
            parent[path[-1]] = draw(alike(parent[path[-1]]))
        elif how == "replace":
            parent[path[-1]] = draw(json_values)
        elif how == "remove":
            parent.pop(path[-1])
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=6))] = draw(json_values)
        else:
            parent.append(draw(json_values))
    return data


def alike(value):
    if isinstance(value, bool) or value is None:
        return st.one_of(st.booleans(), st.none())
    if isinstance(value, int | float):
        return st.one_of(st.integers(-1, 20), st.floats(-1, 2e9, allow_nan=False))
    if isinstance(value, str):
        return st.sampled_from(["10.0.0.11", "10.0.0.12", "10.0.0.21", "10.0.0.1", "10.0.0.99",
                                "cpu", "gpu", "head", "spare", "active", "joining", "failed",
                                "ALIVE", "DEAD", "SPREAD", "STRICT_PACK", "", value])
    if isinstance(value, list):
        return st.lists(st.sampled_from(value), max_size=len(value) + 1) if value else st.just([])
    return st.just(value)


def check_consistent(snapshot) -> None:
    """What any accepted snapshot must satisfy, independently of the decoder."""
    config = snapshot.config
    assert math.isfinite(snapshot.now) and snapshot.now >= 0
    ips = [ip for t in config.node_types for ip in t.ips]
    assert len(ips) == len(set(ips)), "an address in two node types"
    names = [t.name for t in config.node_types]
    assert len(names) == len(set(names)) and all(names)
    for node_type in config.node_types:
        assert node_type.min_workers >= 0
        assert node_type.max_workers is None or node_type.max_workers >= 0
        assert all(math.isfinite(v) and v >= 0 for v in node_type.resources.values())
    machine_ips = [m.ip for m in snapshot.machines]
    assert len(machine_ips) == len(set(machine_ips)), "a machine listed twice"
    for machine in snapshot.machines:
        assert isinstance(machine.state, MachineState)
        assert machine.ip and machine.node_type
        assert math.isfinite(machine.since) and math.isfinite(machine.next_attempt_at)
        assert machine.failures >= 0 and machine.success_count >= 0
        again = plan_input_from_dict({"now": 0, "config": {"head_ip": "h", "node_types": {}},
                                      "machines": [machine_to_dict(machine)]})
        assert again.machines == (machine,)
    for node in snapshot.demand.nodes:
        assert isinstance(node.state, RayNodeState)
        assert math.isfinite(node.idle_s) and node.idle_s >= 0
    for bundle in (*snapshot.demand.pending, *snapshot.demand.constraints):
        assert bundle.count >= 0
        assert all(math.isfinite(v) and v >= 0 for v in bundle.resources.values())


MUTATED: Counter = Counter()


@SETTINGS
@given(st.one_of(mutated_snapshots(), mutated_snapshots(), mutated_snapshots(), json_values))
def decoded(data):
    try:
        snapshot = plan_input_from_dict(data)
    except FormatError as err:
        assert str(err)
        event("refused")
        MUTATED["refused"] += 1
        return
    event("accepted")
    MUTATED["accepted"] += 1
    check_consistent(snapshot)
    decision = plan(snapshot)  # the pure decision never crashes on an accepted snapshot
    for action in decision.actions:
        assert config_ip(snapshot, action.ips)


def config_ip(snapshot, ips) -> bool:
    """Actions name machines of the snapshot's pool or records, never the head."""
    known = {ip for t in snapshot.config.node_types for ip in t.ips} | {
        m.ip for m in snapshot.machines}
    return all(ip in known and ip != snapshot.config.head_ip for ip in ips)


def test_snapshots_decode_or_are_refused_by_place_and_accepted_ones_are_consistent():
    MUTATED.clear()
    decoded()
    total = sum(MUTATED.values())
    print(f"\nplan snapshots: {total} inputs, {dict(MUTATED)}")
    for side in ("accepted", "refused"):
        assert MUTATED[side] >= FLOOR * total, (side, dict(MUTATED))


@SETTINGS
@given(st.one_of(st.text(max_size=300).map(str.encode),
                 mutated_snapshots().map(lambda d: json.dumps(d).encode()),
                 st.text(max_size=40).map(lambda t: json.dumps(EXAMPLE).encode()[:200]
                                          + t.encode())))
def test_any_text_file_gets_a_decision_or_a_format_error(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("plan") / "snapshot.json"
    path.write_bytes(raw)
    try:
        load(path)
    except FormatError as err:
        assert str(err).startswith(str(path))


def test_a_file_that_is_not_utf8_gets_a_format_error(tmp_path):
    path = tmp_path / "snapshot.json"
    path.write_bytes(b"\x80")
    with pytest.raises(FormatError, match=r"snapshot\.json: not UTF-8"):
        load(path)
