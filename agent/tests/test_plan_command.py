"""`onprem-ray-agent plan SNAPSHOT.json` and its documented format."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from onprem_ray_agent import cli
from onprem_ray_agent.codec import (
    FormatError,
    machine_from_dict,
    machine_to_dict,
    plan_input_from_dict,
    selectors_to_dict,
)
from onprem_ray_agent.model import LabelOperator, Machine, MachineState
from onprem_ray_agent.plan import plan_file

AGENT_DIR = Path(__file__).resolve().parent.parent
EXAMPLE = AGENT_DIR / "examples" / "plan-snapshot.json"
FORMAT_DOC = AGENT_DIR / "docs" / "plan-format.md"


def test_the_example_through_the_installed_entry_point_module() -> None:
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(AGENT_DIR), *sys.path])}
    proc = subprocess.run([sys.executable, "-m", "onprem_ray_agent.cli", "plan", str(EXAMPLE)],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    decision = json.loads(proc.stdout)
    by_kind = {(a["kind"], a["node_type"]): a for a in decision["actions"]}
    assert by_kind[("forget", "cpu")]["ips"] == ["10.0.0.30"]
    assert by_kind[("add", "cpu")]["ips"] == ["10.0.0.14"]
    assert by_kind[("add", "gpu")]["ips"] == ["10.0.0.21"]  # succeeded before: preferred
    assert by_kind[("add", "gpu")]["reason"].startswith("1 pending {'CPU': 2, 'GPU': 1} bundle")
    assert "with labels {accelerator=in(a100,h100)}" in by_kind[("add", "gpu")]["reason"]
    assert [i["demand"] for i in decision["infeasible"]] == [
        "{'GPU': 4}", "{'CPU': 1} with labels {zone=rack-9}"]
    assert "10.0.0.11 idle 900 s: kept, as pending demand fits there" in decision["notes"]


# Modules `plan` must not need: Ray, the metrics and runner libraries, and the agent's
# modules that talk to them.
_BLOCKED = ("ray", "prometheus_client", "ansible_runner", "yaml",
            "onprem_ray_agent.adapters", "onprem_ray_agent.metrics", "onprem_ray_agent.loop",
            "onprem_ray_agent.service", "onprem_ray_agent.store", "onprem_ray_agent.config",
            "onprem_ray_agent.status")
_BLOCKER = f"""
import importlib.abc, sys
BLOCKED = {_BLOCKED!r}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"blocked for this test: {{name}}")
sys.meta_path.insert(0, Blocker())
for name in ("ray", "prometheus_client"):
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{{name}} was importable: the blocker does not work")
from onprem_ray_agent import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def test_plan_runs_with_only_the_pure_modules(tmp_path) -> None:
    # The agent and the collection (whose pure min_workers choice the policy shares), as the
    # onprem-ray distribution installs them.
    collections = AGENT_DIR.parent / ".cache" / "collections"
    env = os.environ | {"PYTHONPATH": os.pathsep.join((str(AGENT_DIR), str(collections)))}
    proc = subprocess.run([sys.executable, "-c", _BLOCKER, "plan", "--compact", str(EXAMPLE)],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == plan_file(EXAMPLE)
    # and the blocker does block: `status` needs the store and cannot start
    proc = subprocess.run([sys.executable, "-c", _BLOCKER, "status", "--state-dir",
                           str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode != 0 and "blocked for this test" in proc.stderr


def _v1(data: dict) -> dict:
    data = copy.deepcopy(data)
    data["format_version"] = 1
    gpu = data["config"]["node_types"]["gpu"]
    del gpu["labels"], gpu["idle_timeout_s"]
    for bundle in data["demand"]["pending"]:
        bundle.pop("label_selector", None)
    for node in data["demand"]["nodes"]:
        node.pop("labels", None)
    return data


def test_version_1_is_still_read_and_refuses_the_keys_of_version_2() -> None:
    old = plan_input_from_dict(_v1(_example()))
    assert old.config.node_type("gpu").labels == {}
    assert all(b.label_selectors == () for b in old.demand.pending)
    with_labels = _v1(_example())
    with_labels["demand"]["pending"][0]["label_selector"] = {"zone": "a"}
    with pytest.raises(FormatError, match=re.escape(
            "demand.pending[0]: unknown key 'label_selector'")):
        plan_input_from_dict(with_labels)


@pytest.mark.parametrize(("written", "operator", "values"), [
    ("a100", LabelOperator.IN, ("a100",)),
    ("!a100", LabelOperator.NOT_IN, ("a100",)),
    ("in(h100, a100)", LabelOperator.IN, ("a100", "h100")),
    ("!in(a100,h100)", LabelOperator.NOT_IN, ("a100", "h100")),
])
def test_label_selectors_in_rays_syntax(written, operator, values) -> None:
    data = _with(lambda d: d["demand"]["pending"][1].update(label_selector={"gpu": written}))
    (selector,) = plan_input_from_dict(data).demand.pending[1].label_selectors
    (constraint,) = selector.constraints
    assert (constraint.key, constraint.operator, constraint.values) == ("gpu", operator, values)
    assert selectors_to_dict((selector,))["label_selector"]["gpu"].replace(" ", "") in (
        written.replace(" ", ""), "in(a100,h100)")


def test_placement_groups_with_bundle_selectors_and_placed_bundles() -> None:
    data = _with(lambda d: d["demand"]["placement_groups"][0].update(
        bundle_label_selectors=[{"zone": "rack-1"}, {}], placed_on=["10.0.0.12"]))
    (group,) = plan_input_from_dict(data).demand.placement_groups
    assert group.placed_on == ("10.0.0.12",)
    assert [str(s) for s in group.selectors(0)] == ["{zone=rack-1}"] and group.selectors(1) == ()


def test_the_documented_output_is_the_real_output() -> None:
    text = FORMAT_DOC.read_text()
    match = re.search(r"<!-- plan-output -->\n```json\n(.*?)\n```", text, re.S)
    assert match, "plan-format.md shows the example's output after <!-- plan-output -->"
    assert json.loads(match.group(1)) == plan_file(EXAMPLE)


def test_the_documented_example_is_the_example_file() -> None:
    assert "agent/examples/plan-snapshot.json" in FORMAT_DOC.read_text()


def test_main_prints_compact_json(capsys) -> None:
    assert cli.main(["plan", "--compact", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert json.loads(out)["now"] == 1700000000.0


def _example() -> dict:
    return json.loads(EXAMPLE.read_text())


def _with(change) -> dict:
    data = copy.deepcopy(_example())
    change(data)
    return data


BAD = [
    pytest.param(lambda d: d["config"].update(idle_timeout=5),
                 "config: unknown key 'idle_timeout'", id="unknown-config-key"),
    pytest.param(lambda d: d["config"]["node_types"]["gpu"].update(resorces={}),
                 "config.node_types.gpu: unknown key 'resorces'", id="typo-in-a-node-type"),
    pytest.param(lambda d: d["machines"][0].update(state="busy"),
                 "machines[0].state: 'busy' is not one of spare, joining", id="unknown-state"),
    pytest.param(lambda d: d["demand"]["pending"][0].update(count=-1),
                 "demand.pending[0].count: must be >= 0", id="negative-count"),
    pytest.param(lambda d: d["demand"]["placement_groups"][0].update(strategy="TIGHT"),
                 "demand.placement_groups[0].strategy: 'TIGHT' is not one of PACK",
                 id="unknown-strategy"),
    pytest.param(lambda d: d["demand"]["nodes"][0]["total"].update(CPU="two"),
                 "demand.nodes[0].total.CPU: expected a number", id="non-numeric-resource"),
    pytest.param(lambda d: d.pop("now"), "snapshot: missing key 'now'", id="missing-now"),
    pytest.param(lambda d: d["config"]["node_types"]["gpu"]["ips"].append("10.0.0.11"),
                 "10.0.0.11 is listed in node types cpu and gpu", id="ip-in-two-types"),
    pytest.param(lambda d: d["machines"].append(dict(d["machines"][0])),
                 "machines: 10.0.0.11 is listed twice", id="duplicate-machine"),
    pytest.param(lambda d: d.update(format_version=3), "format_version: 3 is not supported",
                 id="newer-format"),
    pytest.param(lambda d: d["config"].update(upscaling_speed=True),
                 "config.upscaling_speed: expected a number", id="bool-is-not-a-number"),
    pytest.param(lambda d: d["demand"]["pending"][0].update(label_selector={"gpu": "in()"}),
                 "demand.pending[0].label_selector.gpu: 'in()' is not a label selector",
                 id="empty-selector-values"),
    pytest.param(lambda d: d["demand"]["pending"][1].update(
        fallback_label_selectors=[{"zone": "a"}]),
                 "demand.pending[1].fallback_label_selectors: needs a label_selector first",
                 id="fallback-without-selector"),
    pytest.param(lambda d: d["demand"]["placement_groups"][0].update(
        bundle_label_selectors=[{}]),
                 "1 selectors for 2 bundles", id="one-selector-per-bundle"),
    pytest.param(lambda d: d["config"]["node_types"]["gpu"].update(labels={"zone": 3}),
                 "config.node_types.gpu.labels.zone: expected a non-empty string",
                 id="label-value-not-a-string"),
]


@pytest.mark.parametrize(("change", "message"), BAD)
def test_bad_input_is_refused_by_its_path(change, message) -> None:
    with pytest.raises(FormatError, match=re.escape(message)):
        plan_input_from_dict(_with(change))


def test_the_cli_names_the_file_and_the_place(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_with(lambda d: d["config"].update(colour="red"))))
    assert cli.main(["plan", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"onprem-ray-agent plan: {bad}: config: unknown key 'colour'" in err


@pytest.mark.parametrize(("content", "message"), [
    pytest.param(None, "No such file", id="missing-file"),
    pytest.param("{", "not JSON", id="not-json"),
])
def test_unreadable_snapshots(tmp_path, capsys, content, message) -> None:
    path = tmp_path / "snapshot.json"
    if content is not None:
        path.write_text(content)
    assert cli.main(["plan", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_a_minimal_snapshot_needs_only_config_and_now() -> None:
    minimal = {"now": 0, "config": {"head_ip": "10.0.0.1",
                                    "node_types": {"cpu": {"ips": ["10.0.0.2"]}}}}
    decided = plan_input_from_dict(minimal)
    assert decided.machines == () and decided.demand.nodes == ()


def test_machine_records_round_trip() -> None:
    record = Machine(ip="10.0.0.5", node_type="gpu", state=MachineState.QUARANTINED,
                     since=5.0, reason="5 consecutive failures", last_error="boom",
                     failures=5, next_attempt_at=9.0, request_id="add-x", success_count=1)
    assert machine_from_dict(machine_to_dict(record), "m") == record


def test_without_anything_the_cli_shows_its_commands(capsys) -> None:
    assert cli.main([]) == 2
    usage = capsys.readouterr().err
    for command in cli.COMMANDS:
        assert command in usage


def _joining_snapshot(tmp_path: Path, **extra) -> Path:
    snapshot = {
        "format_version": 2, "now": 1000.0,
        "config": {"head_ip": "10.0.0.1", "cancel_join_after_s": 30,
                   "node_types": {"cpu": {"ips": ["10.0.0.11", "10.0.0.12"],
                                          "resources": {"CPU": 4}}}},
        "machines": [{"ip": ip, "node_type": "cpu", "state": "joining", "since": 900.0,
                      "request_id": "add-cpu-900-abcdef12"} for ip in ("10.0.0.11", "10.0.0.12")],
        "demand": {"nodes": [{"ip": "10.0.0.1", "total": {}}]},
    } | extra
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(snapshot), encoding="utf-8")
    return path


def test_plan_shows_the_cancel_of_a_join_no_demand_needs(tmp_path) -> None:
    first = plan_file(_joining_snapshot(tmp_path))
    assert [a["kind"] for a in first["actions"]] == []
    assert first["unneeded_since"] == {"add-cpu-900-abcdef12": 1000.0}
    assert any("canceled after cancel_join_after_s 30" in note for note in first["notes"])
    later = plan_file(_joining_snapshot(tmp_path, unneeded_since=first["unneeded_since"],
                                        now=1030.0))
    (cancel,) = later["actions"]
    assert (cancel["kind"], cancel["event"], cancel["ips"], cancel["request_id"]) == (
        "cancel", "join_canceled", ["10.0.0.11", "10.0.0.12"], "add-cpu-900-abcdef12")
    assert "for 30 s, since 1000" in cancel["reason"]


def test_plan_refuses_a_bad_unneeded_since(tmp_path) -> None:
    with pytest.raises(FormatError, match=r"unneeded_since\.add-x: expected a number"):
        plan_file(_joining_snapshot(tmp_path, unneeded_since={"add-x": "soon"}))
    with pytest.raises(FormatError, match=r"config: cancel_join_after_s must be a finite "
                                          r"number > 0"):
        plan_file(_joining_snapshot(tmp_path, config={
            "head_ip": "10.0.0.1", "cancel_join_after_s": 0, "node_types": {}}))


def _absent_snapshot(tmp_path: Path, **extra) -> Path:
    """An active worker the head's restarted GCS does not list."""
    snapshot = {
        "format_version": 2, "now": 1000.0,
        "config": {"head_ip": "10.0.0.1", "provision_timeout_s": 600,
                   "node_types": {"cpu": {"ips": ["10.0.0.11"], "resources": {"CPU": 4}}}},
        "machines": [{"ip": "10.0.0.11", "node_type": "cpu", "state": "active",
                      "since": 100.0}],
        "demand": {"nodes": [{"ip": "10.0.0.1", "total": {}}]},
    } | extra
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(snapshot), encoding="utf-8")
    return path


def test_plan_shows_an_absent_worker_lost_after_provision_timeout_s(tmp_path) -> None:
    first = plan_file(_absent_snapshot(tmp_path))
    assert first["actions"] == []
    assert first["absent_since"] == {"10.0.0.11": 1000.0}
    later = plan_file(_absent_snapshot(tmp_path, absent_since=first["absent_since"],
                                       now=1601.0))
    (lost,) = later["actions"]
    assert (lost["kind"], lost["event"], lost["ips"]) == ("mark", "lost", ["10.0.0.11"])
    assert lost["reason"].startswith("not in Ray's node list for 601 s since 1970-01-01 "
                                     "00:16:40 UTC (provision_timeout_s 600)")
    assert "absent_since" not in later


def test_plan_refuses_a_bad_absent_since(tmp_path) -> None:
    with pytest.raises(FormatError, match=r"absent_since\.10\.0\.0\.11: expected a number"):
        plan_file(_absent_snapshot(tmp_path, absent_since={"10.0.0.11": "long ago"}))
    with pytest.raises(FormatError, match=r"absent_since: expected an object of addresses "
                                          r"to times"):
        plan_file(_absent_snapshot(tmp_path, absent_since=["10.0.0.11"]))
