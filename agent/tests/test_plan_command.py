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
)
from onprem_ray_agent.model import Machine, MachineState
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
    assert [i["demand"] for i in decision["infeasible"]] == ["{'GPU': 4}"]
    assert "10.0.0.11 idle 900 s: kept, as pending demand fits there" in decision["notes"]


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
    pytest.param(lambda d: d.update(format_version=2), "format_version: 2 is not supported",
                 id="newer-format"),
    pytest.param(lambda d: d["config"].update(upscaling_speed=True),
                 "config.upscaling_speed: expected a number", id="bool-is-not-a-number"),
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
