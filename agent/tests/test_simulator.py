"""The scaling simulator (bench/simulate.py) on a small pool for a few simulated hours: the
invariants the agent must keep hold, and skipping unchanged iterations changes nothing."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from sim import workload
from sim.engine import Simulation
from sim.trace import TraceError, Work, read_trace, shape_of, write_trace

from onprem_ray_agent.model import Config, NodeType

HOUR = 3600.0
POOL = workload.scaled_pool(0.02)  # cpu 14, highmem 4, gpu 2


def small_config(**settings) -> Config:
    return dataclasses.replace(
        Config(head_ip=workload.HEAD_IP,
               node_types=tuple(NodeType(t.name, t.ips(), t.resources) for t in POOL)),
        **settings)


def busy_hours(seed: int, hours: float = 3.0) -> list[Work]:
    """The small pool's share of the day's busiest hours, from 11:00, placement groups no
    wider than its GPU machines."""
    start = 11 * HOUR
    works = workload.synthetic(seed, 11 + hours, workload.Mix(scale=0.02))
    gpus = next(t.machines for t in POOL if t.name == "gpu")
    return [dataclasses.replace(w, t=w.t - start) for w in works
            if w.t >= start and len(w.bundles) <= gpus]


def test_limits_hold_and_every_demand_is_served():
    works = busy_hours(seed=3)
    config = small_config(idle_timeout_minutes=1, upscaling_speed=10, max_workers=9,
                          node_types=tuple(
                              dataclasses.replace(t, max_workers=6) if t.name == "cpu" else t
                              for t in small_config().node_types))
    result = Simulation(config, works, horizon_s=3 * HOUR, finish_work=True, seed=3).run()
    units = sum(w.units for w in works)
    assert units > 100
    assert sum(n for _, n in result.waits) == units  # every unit placed once
    assert result.unserved == []
    assert all(wait >= 0 for wait, _ in result.waits)
    # The demand wants more than the limits: they are reached, never passed.
    assert result.max_on["cpu"] == 6
    assert result.max_on_total == 9
    assert result.end_s >= 3 * HOUR
    assert result.adds >= result.retires > 0


def test_skipping_unchanged_iterations_decides_the_same_as_every_interval():
    works = busy_hours(seed=5, hours=1.5)
    config = small_config(idle_timeout_minutes=1)
    runs = [Simulation(config, works, horizon_s=1.5 * HOUR, seed=5, every_tick=every,
                       record_actions=True).run() for every in (False, True)]
    fast, full = runs
    assert fast.actions and fast.actions == full.actions
    assert fast.waits == full.waits
    assert fast.machine_seconds == full.machine_seconds
    assert fast.decide_calls < full.decide_calls / 2  # and it did skip
    assert full.decide_calls == full.ticks


def test_the_same_seed_gives_the_same_day_and_another_seed_another():
    assert workload.synthetic(7, 2) == workload.synthetic(7, 2)
    assert workload.synthetic(7, 2) != workload.synthetic(8, 2)
    works = busy_hours(seed=7, hours=1)
    first, second = (Simulation(small_config(), works, horizon_s=HOUR, seed=7).run()
                     for _ in range(2))
    assert (first.waits, first.adds, first.machine_seconds) == \
        (second.waits, second.adds, second.machine_seconds)


def test_all_on_reference_costs_the_whole_pool_and_bounds_the_oracle():
    works = busy_hours(seed=3, hours=1)
    result = Simulation(small_config(), works, horizon_s=HOUR, all_on=True).run()
    machines = sum(t.machines for t in POOL)
    assert sum(result.machine_seconds.values()) == pytest.approx(machines * HOUR)
    oracle = sum(result.oracle_machine_seconds.values())
    assert 0 < oracle < machines * HOUR
    assert result.adds == result.retires == result.decide_calls == 0


def test_trace_round_trip(tmp_path):
    works = workload.synthetic(3, 2)
    path = tmp_path / "day.jsonl"
    write_trace(path, works, duration_s=HOUR)
    trace = read_trace(path)
    assert trace.duration_s == HOUR
    assert len(trace.works) == len(works) > 10
    assert {w.kind for w in works} == {"task", "actor", "placement_group"}
    for read, wrote in zip(trace.works, works, strict=True):
        assert read.kind == wrote.kind and read.shape == wrote.shape
        assert read.t == pytest.approx(wrote.t, abs=1e-3)
        assert read.duration_s == pytest.approx(wrote.duration_s, abs=1e-3)
        assert (read.count, read.bundles, read.strategy) == \
            (wrote.count, wrote.bundles, wrote.strategy)


HEADER = '{"format": "onprem-ray-trace", "version": 1}'


@pytest.mark.parametrize(("lines", "message"), [
    ([], "empty"),
    (['{"format": "other"}'], ":1: the first line must be the header"),
    (['{"format": "onprem-ray-trace", "version": 2}'], "trace version 2"),
    ([HEADER, "{oops"], ":2: not JSON"),
    ([HEADER, '{"t": 1, "kind": "job", "duration_s": 1}'], ":2: kind must be one of"),
    ([HEADER, '{"t": -1, "kind": "task", "resources": {"CPU": 1}, "duration_s": 1}'],
     ":2: t must be >= 0"),
    ([HEADER, '{"t": 1, "kind": "task", "resources": {"CPU": 1}, "duration_s": 0}'],
     ":2: duration_s must be > 0"),
    ([HEADER, '{"t": 1, "kind": "task", "resources": {"CPU": 0}, "duration_s": 1}'],
     ":2: resources asks for nothing"),
    ([HEADER, '{"t": 1, "kind": "actor", "resources": {"CPU": 1}, "count": 0, '
              '"duration_s": 1}'], ":2: count must be an integer >= 1"),
    ([HEADER, '{"t": 1, "kind": "placement_group", "strategy": "RANDOM", '
              '"bundles": [{"GPU": 1}], "duration_s": 1}'], ":2: strategy must be one of"),
    ([HEADER, '{"t": 5, "kind": "task", "resources": {"CPU": 1}, "duration_s": 1}',
      '{"t": 4, "kind": "task", "resources": {"CPU": 1}, "duration_s": 1}'],
     ":3: t 4 is before the previous record's 5"),
])
def test_a_bad_trace_is_refused_naming_the_line(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TraceError, match=".*".join(map(_escape, message.split("*")))) as err:
        read_trace(path)
    assert str(path) in str(err.value)


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_work_asking_for_a_resource_no_machine_has_waits_and_is_reported(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(HEADER + "\n" + json.dumps(
        {"t": 0, "kind": "task", "resources": {"TPU": 1}, "duration_s": 10}) + "\n")
    works = list(read_trace(path).works)
    assert works[0].shape == shape_of({"TPU": 1})
    result = Simulation(small_config(), works, horizon_s=600).run()
    assert result.waits == [] and result.unserved == [(600.0, 1)]
    assert result.adds == 0


def _simulate_main():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "simulate", Path(__file__).resolve().parents[2] / "bench" / "simulate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_command_prints_the_table_and_writes_the_plots(tmp_path, capsys):
    simulate = _simulate_main()
    out = tmp_path / "plots"
    code = simulate.main(["--hours", "12", "--pool-fraction", "0.02", "--idle", "1", "15",
                          "--speed", "1", "--jobs", "1", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    for row in ("| all machines always on |", "| oracle lower bound |",
                "| idle 1 min, speed 1 |", "| idle 15 min, speed 1 |"):
        assert row in printed
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["cost-vs-wait.png", "demand-and-machines.png", "wait-distribution.png"]
    assert all((out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in pngs)
    assert "| idle 1 min, speed 1 |" in (out / "table.md").read_text()


def test_the_command_says_matplotlib_is_missing(tmp_path, capsys, monkeypatch):
    simulate = _simulate_main()
    real = simulate.importlib.util.find_spec
    monkeypatch.setattr(simulate.importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert simulate.main(["--out", str(tmp_path)]) == 2
    assert "the plots need matplotlib, which is not installed" in capsys.readouterr().err


def test_the_command_refuses_a_bad_trace(tmp_path, capsys):
    path = tmp_path / "t.jsonl"
    path.write_text('{"format": "onprem-ray-trace", "version": 1}\n{"t": 1}\n')
    assert _simulate_main().main(["--trace", str(path)]) == 2
    assert f"{path}:2: duration_s must be a number" in capsys.readouterr().err
