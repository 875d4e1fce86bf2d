"""The agent's demand history: recorded only on change, bounded on disk, exported as a trace
that the scaling simulator reads and replays (the round trip)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from decide_fixtures import HEAD, head_node, ray_node
from loop_fakes import FakeRay, FakeRunner

from onprem_ray_agent import cli
from onprem_ray_agent.history import (
    HISTORY_FILE,
    HistoryError,
    HistoryRecorder,
    export,
    samples,
)
from onprem_ray_agent.model import (
    BundleDemand,
    Config,
    DemandSnapshot,
    NodeType,
    PlacementGroupDemand,
    PlacementStrategy,
)
from onprem_ray_agent.service import Options, Signals, run

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from sim.engine import Simulation
from sim.trace import read_trace, shape_of

A, B = "10.0.1.1", "10.0.1.2"
T0 = 1_700_000_000.0


def snapshot(used: dict[str, float], pending: int = 0, group: bool = False,
             head_busy: bool = False) -> DemandSnapshot:
    """Workers A and B with 8 CPUs each, `used` CPUs in use; `pending` 2-CPU bundles."""
    nodes = [head_node() if not head_busy else
             ray_node(HEAD, {"CPU": 8}, {"CPU": 0})]
    nodes += [ray_node(address, {"CPU": 8}, {"CPU": 8 - cpus}) for address, cpus in used.items()]
    groups = (PlacementGroupDemand("pg1", PlacementStrategy.PACK, ({"CPU": 8},)),) if group \
        else ()
    return DemandSnapshot(pending=(BundleDemand({"CPU": 2}, pending),) if pending else (),
                          placement_groups=groups, nodes=tuple(nodes))


def test_recorder_writes_a_header_and_then_only_changes(tmp_path):
    recorder = HistoryRecorder(tmp_path, HEAD)
    recorder.record(T0, snapshot({A: 4, B: 0}, head_busy=True))
    recorder.record(T0 + 5, snapshot({A: 4, B: 0}, head_busy=True))  # nothing changed
    recorder.record(T0 + 10, snapshot({A: 4, B: 2}))  # B changed (the head is not recorded)
    recorder.record(T0 + 15, snapshot({A: 4}, pending=3))  # B gone, demand pending
    lines = [json.loads(line) for line in (tmp_path / HISTORY_FILE).read_text().splitlines()]
    assert lines[0] == {"format": "onprem-ray-history", "version": 1, "started": T0}
    assert [line["t"] for line in lines[1:]] == [T0, T0 + 10, T0 + 15]
    assert lines[1]["full"] is True and lines[1]["used"] == {A: {"CPU": 4.0}, B: {}}
    assert lines[2]["used"] == {B: {"CPU": 2.0}} and "full" not in lines[2]
    assert lines[3]["gone"] == [B] and lines[3]["pending"] == [[{"CPU": 2.0}, 3]]


def test_history_stays_within_twice_its_bound_and_reads_across_the_rotation(tmp_path):
    recorder = HistoryRecorder(tmp_path, HEAD, max_bytes=2000)
    for i in range(400):
        recorder.record(T0 + i, snapshot({A: i % 8, B: (i // 8) % 8}))
    current, older = tmp_path / HISTORY_FILE, tmp_path / (HISTORY_FILE + ".1")
    assert older.exists()
    assert current.stat().st_size <= 2000 + 200 and older.stat().st_size <= 2000 + 200
    times = [line["t"] for _, line in samples(tmp_path)]
    assert times == sorted(times) and times[-1] == T0 + 399
    assert 0 < len(times) < 400  # the oldest went with the rotation
    # after a rotation the new file starts with every node's usage, so reading can start there
    assert json.loads(current.read_text().splitlines()[1])["full"] is True


def test_export_replays_in_the_simulator(tmp_path):
    """A on 4 CPUs for 100 s; 1 bundle of 2 CPUs pending from 10 s, placed on B at 20 s
    until 50 s; a placement group still pending at the end is left out."""
    recorder = HistoryRecorder(tmp_path, HEAD)
    for t, state in [(0, snapshot({A: 4, B: 0})), (10, snapshot({A: 4, B: 0}, pending=1)),
                     (20, snapshot({A: 4, B: 2})), (50, snapshot({A: 4, B: 0})),
                     (90, snapshot({A: 4, B: 0}, group=True)),
                     (100, snapshot({A: 0, B: 0}, group=True))]:
        recorder.record(T0 + t, state)
    trace_path = tmp_path / "trace.jsonl"
    summary = export(tmp_path, trace_path)
    assert (summary.tasks, summary.waited, summary.left_pending) == (2, 1, 1)
    trace = read_trace(trace_path)  # the simulator's reader
    assert trace.duration_s == 100
    assert [(w.t, w.kind, w.shape, w.count, w.duration_s) for w in trace.works] == [
        (0.0, "task", shape_of({"CPU": 4}), 1, 100.0),
        (10.0, "task", shape_of({"CPU": 2}), 1, 30.0),  # arrived when first pending
    ]
    config = Config(head_ip=HEAD, node_types=(NodeType("cpu", (A, B), {"CPU": 8}),),
                    idle_timeout_minutes=1)
    result = Simulation(config, list(trace.works), horizon_s=trace.duration_s,
                        finish_work=True).run()
    assert sum(units for _, units in result.waits) == 2 and result.unserved == []
    assert result.adds >= 1


def test_history_command_exports_and_reports(tmp_path, capsys):
    recorder = HistoryRecorder(tmp_path, HEAD)
    recorder.record(T0, snapshot({A: 4}))
    recorder.record(T0 + 60, snapshot({A: 0}))
    out = tmp_path / "trace.jsonl"
    assert cli.main(["history", "--state-dir", str(tmp_path), "--export", str(out)]) == 0
    assert "1 records, 1 tasks over 0.0 h" in capsys.readouterr().out
    assert len(read_trace(out).works) == 1


def test_history_command_says_what_is_missing(tmp_path, capsys):
    code = cli.main(["history", "--state-dir", str(tmp_path / "none"), "--export",
                     str(tmp_path / "t.jsonl")])
    assert code == 2
    assert "history.jsonl does not exist: the agent has recorded no history" in \
        capsys.readouterr().err


@pytest.mark.parametrize(("text", "message"), [
    ('{"format": "x"}\n', ":1: not an onprem-ray-agent history"),
    ('{"format": "onprem-ray-history", "version": 9}\n', ":1: history version 9"),
    ('{"format": "onprem-ray-history", "version": 1}\nnope\n{"t": 1}\n', ":2: not JSON"),
    ('{"format": "onprem-ray-history", "version": 1}\n{"t": 1}\n', ":2: malformed sample"),
])
def test_a_damaged_history_is_refused_naming_the_line(tmp_path, text, message):
    (tmp_path / HISTORY_FILE).write_text(text)
    with pytest.raises(HistoryError, match=message.replace("(", r"\(")):
        export(tmp_path, tmp_path / "t.jsonl")


def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path):
    recorder = HistoryRecorder(tmp_path, HEAD)
    recorder.record(T0, snapshot({A: 4}))
    recorder.record(T0 + 30, snapshot({A: 0}))
    with (tmp_path / HISTORY_FILE).open("a") as stream:
        stream.write('{"t": 17000')
    assert export(tmp_path, tmp_path / "t.jsonl").tasks == 1


def test_the_running_agent_records_its_history(tmp_path, cluster_file):
    ray = FakeRay()
    ray.want(2, GPU=1)  # fits no machine: recorded as pending, and no run to wait for
    options = Options(cluster_file=cluster_file, state_dir=tmp_path / "state",
                      gcs_address="127.0.0.1:1", once=True, metrics_port=0)
    assert run(options, signals=Signals(), ray=ray,
               runner=FakeRunner(pool=frozenset({"10.0.1.1", "10.0.1.2", "10.0.1.3"}))) == 0
    (_, line), = samples(tmp_path / "state")
    assert line["pending"] == [[{"GPU": 1.0}, 2]] and line["full"] is True
