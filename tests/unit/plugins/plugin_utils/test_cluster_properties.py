"""Generated cluster files: validation never crashes, never accepts an inconsistent file,
and accepts the consistent ones.

The generators reach both sides: each property counts its accepted and refused files
(`hypothesis.event`, shown by --hypothesis-show-statistics) and asserts a floor on each.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter

import pytest
from ansible_collections.onprem.ray.plugins.plugin_utils import cluster_validation as validation
from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_file import (
    load_cluster_file,
)
from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_model import (
    ClusterConfigError,
)
from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_validation import validate
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

# The profile of the checkout's root conftest.py (dev or ci); also without it, as under
# ansible-test units (the artifact has no root conftest.py), no deadline on a busy machine.
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The least share of examples that must land on each side of a property.
FLOOR = 0.2
HEAD = "10.255.0.1"
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
SAFE_ADDRESS = re.compile(r"[A-Za-z0-9.:-]+")

# ---------------------------------------------------------------- anything at all

IPS = [f"10.0.0.{i}" for i in range(1, 12)]
entries = st.one_of(
    st.sampled_from(IPS),
    st.builds(lambda a, b: f"10.0.0.{a}-10.0.0.{b}", st.integers(0, 12), st.integers(0, 12)),
    st.sampled_from(["10.0.0.0/30", "10.0.0.8/29", "10.0.0.4/31", "10.0.0.5/24", "10.0.0.0/8",
                     "gpu1", "GPU1", "n-2.lab", "fd00::1", "fd00::1-fd00::3", HEAD]),
    st.sampled_from(["10.0.0.300", "a;b", "$(id)", "", "10.0.0.5-3", "node_1", "..."]),
    st.text(max_size=12),
    st.integers(), st.none(), st.lists(st.integers(), max_size=2),
)
limits = st.one_of(st.none(), st.integers(-2, 8), st.sampled_from(["2", 1.5, True]))
names = st.one_of(st.sampled_from(["cpu", "gpu", "gpu-a", "gpu_a", "ray.worker.default",
                                   "local.cluster.node"]),
                  st.sampled_from(["bad name", "x;y", "-x", ""]), st.text(max_size=8))
resources = st.dictionaries(
    st.sampled_from(["CPU", "GPU", "custom", "node:x", "bad name"]),
    st.one_of(st.integers(-1, 64), st.floats(allow_nan=True), st.text(max_size=3)),
    max_size=3)
labels = st.dictionaries(st.sampled_from(["rack", "lab.example/zone", "ray.io/x", "bad key"]),
                         st.sampled_from(["r1", "", "a b", 3]), max_size=2)
commands = st.one_of(st.lists(st.text(max_size=6), max_size=2), st.text(max_size=4))
node_types = st.fixed_dictionaries({}, optional={
    "worker_ips": st.lists(entries, max_size=4), "resources": resources, "labels": labels,
    "min_workers": limits, "max_workers": limits, "worker_setup_commands": commands,
    "node_config": st.sampled_from([{}, {"InstanceType": "x"}]), "priority": st.just(1),
    "idle_timeout_s": st.one_of(st.none(), st.integers(-1, 600), st.floats(allow_nan=True),
                                st.sampled_from(["60", True])),
})
providers = st.fixed_dictionaries({"type": st.sampled_from(["local", "local", "aws"])},
                                  optional={"head_ip": st.one_of(st.just(HEAD), entries),
                                            "worker_ips": st.lists(entries, max_size=5),
                                            "coordinator_address": st.just("h:1")})
clusters = st.fixed_dictionaries(
    {"auth": st.fixed_dictionaries({"ssh_user": st.sampled_from(["ops", "bad user", 7])})},
    optional={
        "cluster_name": names, "provider": providers, "min_workers": limits,
        "max_workers": limits,
        "upscaling_speed": st.one_of(st.floats(allow_nan=True), st.integers(-1, 3)),
        "idle_timeout_minutes": st.one_of(st.floats(), st.text(max_size=2)),
        "available_node_types": st.dictionaries(names, node_types, max_size=3),
        "head_node_type": names, "setup_commands": commands,
        "docker": st.sampled_from([{}, {"image": ""}, {"image": "ray"}]),
        "max_worker": st.just(1),
    })
junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6)),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.one_of(st.text(max_size=12), st.integers()), children, max_size=4),
    max_leaves=20)


def expand_oracle(entry: str) -> list[str]:
    """An independent, plain expansion of one accepted worker_ips entry."""
    if "/" in entry:
        return [str(a) for a in ipaddress.ip_network(entry).hosts()]
    first, _dash, last = entry.partition("-")
    if _is_ip(first) and _is_ip(last):
        low, high = ipaddress.ip_address(first), ipaddress.ip_address(last)
        return [str(type(low)(n)) for n in range(int(low), int(high) + 1)]
    return [str(ipaddress.ip_address(entry))] if _is_ip(entry) else [entry]


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_invariants(data: dict, cluster) -> None:
    """What any accepted cluster must satisfy, checked independently of the validator."""
    hosts = [h if _is_ip(h) else h.lower() for h in cluster.hosts]
    assert len(set(hosts)) == len(hosts), "a machine is listed twice"
    assert cluster.head_ip not in cluster.worker_ips
    for host in cluster.hosts:
        assert SAFE_ADDRESS.fullmatch(host), host
    assert SAFE_NAME.fullmatch(cluster.cluster_name)
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", cluster.auth.ssh_user)
    names = [t.name for t in cluster.node_types]
    assert cluster.head_node_type in names
    groups = [t.group for t in cluster.node_types]
    assert len(set(groups)) == len(groups)
    for node_type in cluster.node_types:
        assert SAFE_NAME.fullmatch(node_type.name)
        assert 0 <= node_type.min_workers <= node_type.max_workers <= len(node_type.ips)
        assert node_type.ips or node_type.name == cluster.head_node_type
        assert all(amount >= 0 for amount in node_type.resources.values())
        assert not any(key.startswith("ray.io/") for key in node_type.labels)
        timeout = node_type.idle_timeout_s
        assert timeout is None or (not isinstance(timeout, bool) and math.isfinite(timeout)
                                   and timeout >= 0)
    workers = len(cluster.worker_ips)
    assert 0 <= cluster.min_workers <= cluster.max_workers <= workers
    assert sum(t.min_workers for t in cluster.node_types) <= cluster.max_workers
    # The machines are exactly what the entries of the file expand to.
    raw = list((data.get("provider") or {}).get("worker_ips") or data.get("worker_ips") or [])
    for spec in (data.get("available_node_types") or {}).values():
        raw += (spec or {}).get("worker_ips") or []
    expected = Counter(a for entry in raw for a in expand_oracle(entry))
    assert Counter(cluster.worker_ips) == expected


def both_sides(property_test, outcomes: Counter) -> None:
    """Run a property, then check that its examples reached both sides (and say how often)."""
    outcomes.clear()
    property_test()
    total = sum(outcomes.values())
    print(f"\n{property_test.__name__}: {total} inputs, {dict(outcomes)}")
    for side in ("accepted", "refused"):
        assert outcomes[side] >= FLOOR * total, (side, dict(outcomes))


@st.composite
def mixed_clusters(draw):
    """A consistent file, half of the time with one key taken from the wide generator (at the
    top level or in a node type): the two sides of "accepted files are consistent"."""
    data = draw(consistent_clusters())
    if draw(st.booleans()):
        if draw(st.booleans()):
            wide = draw(clusters)
            key = draw(st.sampled_from(sorted(wide)))
            data[key] = wide[key]
        else:
            spec = data["available_node_types"][draw(st.sampled_from(
                sorted(data["available_node_types"])))]
            wide = draw(node_types.filter(bool))
            key = draw(st.sampled_from(sorted(wide)))
            spec[key] = wide[key]
    return data


GENERATED: Counter = Counter()


@SETTINGS
@given(st.one_of(mixed_clusters(), clusters))
def generated_files(data):
    try:
        cluster = validate(data, source="/site/gen.cluster.yml", check_files=False)
    except ClusterConfigError as err:
        assert err.problems
        assert str(err).startswith("/site/gen.cluster.yml: ")
        event("refused")
        GENERATED["refused"] += 1
        return
    event("accepted")
    GENERATED["accepted"] += 1
    check_invariants(data, cluster)


def test_generated_files_never_crash_and_accepted_ones_are_consistent():
    both_sides(generated_files, GENERATED)


@SETTINGS
@given(junk)
def test_any_data_at_all_gets_an_answer_not_a_crash(data):
    try:
        validate(data, check_files=False)
    except ClusterConfigError as err:
        assert err.problems


@SETTINGS
@given(st.text(max_size=200))
def test_any_text_file_gets_an_answer_not_a_crash(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("gen") / "gen.cluster.yml"
    path.write_text(text)
    try:
        load_cluster_file(str(path), check_files=False)
    except ClusterConfigError as err:
        assert str(err).startswith(str(path))


# ---------------------------------------------------------------- consistent files


@st.composite
def consistent_clusters(draw):
    """A consistent cluster: disjoint machines, limits within bounds, valid names."""
    count = draw(st.integers(1, 3))
    types = {}
    total_min = 0
    for index in range(count):
        style = draw(st.sampled_from(["singles", "range", "cidr", "names", "none"]))
        base = f"10.0.{index}"
        if style == "singles":
            picks = draw(st.lists(st.integers(1, 20), unique=True, max_size=4))
            ips = [f"{base}.{n}" for n in picks]
        elif style == "range":
            first = draw(st.integers(1, 10))
            ips = [f"{base}.{first}-{base}.{first + draw(st.integers(0, 5))}"]
        elif style == "cidr":
            ips = [f"{base}.0/{draw(st.sampled_from([29, 30, 31, 32]))}"]
        elif style == "names":
            ips = [f"t{index}-n{n}.lab" for n in range(draw(st.integers(1, 3)))]
        else:
            ips = []
        machines = sum(len(expand_oracle(e)) for e in ips)
        spec = {"worker_ips": ips, "resources": {"CPU": draw(st.integers(0, 64))}}
        if draw(st.booleans()):
            spec["max_workers"] = draw(st.integers(0, machines))
        high = spec.get("max_workers", machines)
        if draw(st.booleans()):
            spec["min_workers"] = draw(st.integers(0, high))
        total_min += spec.get("min_workers", 0)
        if draw(st.booleans()):
            spec["idle_timeout_s"] = draw(st.one_of(st.none(), st.integers(0, 3600),
                                                    st.floats(0, 1e6)))
        types[draw(st.sampled_from(["cpu", "gpu", "big.mem", "t-4"])) + str(index)] = spec
    head_type = draw(st.sampled_from(sorted(types)))
    for name, spec in types.items():
        if not spec["worker_ips"] and name != head_type:
            spec["worker_ips"] = [f"spare-{name.replace('.', '-')}.lab"]
    data = {"cluster_name": "gen", "provider": {"type": "local", "head_ip": HEAD},
            "auth": {"ssh_user": "ops"}, "head_node_type": head_type,
            "available_node_types": types}
    total = sum(len(expand_oracle(e)) for s in types.values() for e in s["worker_ips"])
    if draw(st.booleans()):
        data["max_workers"] = draw(st.integers(total_min, total))
    if draw(st.booleans()):
        data["min_workers"] = draw(st.integers(0, data.get("max_workers", total)))
    return data


@SETTINGS
@given(consistent_clusters())
def test_consistent_files_are_accepted(data):
    cluster = validate(data, check_files=False)
    check_invariants(data, cluster)
    for name, spec in data["available_node_types"].items():
        node_type = cluster.node_type(name)
        assert node_type.max_workers == spec.get("max_workers", len(node_type.ips))
        assert node_type.min_workers == spec.get("min_workers", 0)
        assert node_type.idle_timeout_s == spec.get("idle_timeout_s")


def at(name: str, key: str) -> str:
    """The key path of a node type's key, spelled as the messages spell it."""
    return validation._child(validation._child("available_node_types", name), key)


def _typed(data):
    return [(name, spec) for name, spec in data["available_node_types"].items()
            if spec["worker_ips"]]


def duplicate_across(data, draw):
    pairs = _typed(data)
    if not pairs:
        return None
    donor_name, donor = draw(st.sampled_from(pairs))
    name = draw(st.sampled_from(sorted(data["available_node_types"])))
    taken = expand_oracle(donor["worker_ips"][0])[0]
    data["available_node_types"][name]["worker_ips"].append(taken)
    # Reported at whichever of the two lists comes second in the file.
    return (at(name, "worker_ips"), at(donor_name, "worker_ips"))


def head_in_workers(data, draw):
    name = draw(st.sampled_from(sorted(data["available_node_types"])))
    data["available_node_types"][name]["worker_ips"].append(HEAD)
    return at(name, "worker_ips")


def min_above_max(data, draw):
    name = draw(st.sampled_from(sorted(data["available_node_types"])))
    spec = data["available_node_types"][name]
    machines = sum(len(expand_oracle(e)) for e in spec["worker_ips"])
    spec["max_workers"] = min(spec.get("max_workers", machines), machines)
    spec["min_workers"] = spec["max_workers"] + draw(st.integers(1, 3))
    return at(name, "min_workers")


def max_above_machines(data, draw):
    name = draw(st.sampled_from(sorted(data["available_node_types"])))
    spec = data["available_node_types"][name]
    spec["max_workers"] = sum(len(expand_oracle(e)) for e in spec["worker_ips"]) + 1
    return at(name, "max_workers")


def negative_limit(data, draw):
    key = draw(st.sampled_from(["min_workers", "max_workers"]))
    data[key] = draw(st.sampled_from([-1, "3", 2.5]))
    return key


def unsafe_name(data, draw):
    bad = draw(st.sampled_from([" ", ";", "$(", "`", "&&", "|", ">", "'", "\n"]))
    where = draw(st.sampled_from(["cluster_name", "auth.ssh_user", "node_type", "label"]))
    if where == "cluster_name":
        data["cluster_name"] = f"lab{bad}x"
    elif where == "auth.ssh_user":
        data["auth"]["ssh_user"] = f"ops{bad}x"
    elif where == "node_type":
        name = draw(st.sampled_from(sorted(data["available_node_types"])))
        spec = data["available_node_types"].pop(name)
        new = f"{name}{bad}x"
        data["available_node_types"][new] = spec
        if data["head_node_type"] == name:
            data["head_node_type"] = new
        return "available_node_types["
    else:
        name = draw(st.sampled_from(sorted(data["available_node_types"])))
        data["available_node_types"][name]["labels"] = {f"rack{bad}x": "r1"}
        return at(name, "labels") + "["
    return where


def unknown_key(data, draw):
    key = draw(st.sampled_from(["max_worker", "workers_ips", "idle_timeout"]))
    data[key] = 1
    return key


BREAKAGES = [duplicate_across, head_in_workers, min_above_max, max_above_machines,
             negative_limit, unsafe_name, unknown_key]


@SETTINGS
@given(consistent_clusters(), st.sampled_from(BREAKAGES), st.data())
def test_one_inconsistency_is_always_refused_and_located(data, breakage, drawer):
    where = breakage(data, drawer.draw)  # the key path(s) the problem may be reported at
    if where is None:
        return  # nothing to duplicate in this cluster
    with pytest.raises(ClusterConfigError) as caught:
        validate(data, check_files=False)
    paths = [problem.path for problem in caught.value.problems]
    assert any(path.startswith(where) for path in paths), (where, paths)
