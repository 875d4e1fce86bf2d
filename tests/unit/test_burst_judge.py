"""The burst's checks (bench/burst.py `judge`) on recorded runs: each limit, broken once,
is reported; a burst served within the limits is not. The real burst runs on the local test
pool (`python bench/burst.py`, tests/e2e/test_burst.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import burst
from burst import Run

A, B, C, D = "10.9.0.11", "10.9.0.12", "10.9.0.13", "10.9.0.14"
STEADY = 100.0


def add(start: float, *ips: str, end: float | None = None, outcome: str = "successful") -> Run:
    return Run("add", ips, start, start + 10 if end is None else end, outcome)


def retire(start: float, *ips: str) -> Run:
    return Run("retire", ips, start, start + 5, "successful")


def judge(runs: list[Run], max_workers: int = 3, speed: float = 1.0, head: bool = False,
          samples: list[burst.Sample] | None = None) -> burst.Verdict:
    return burst.judge(runs, samples or [], since=0.0, steady_from=STEADY,
                       max_workers=max_workers, upscaling_speed=speed,
                       head_of_worker_type=head)


def alive(at: float, *ips: str) -> burst.Sample:
    return (at, frozenset(ips))


def test_a_burst_served_one_then_one_then_two_is_within_every_limit() -> None:
    verdict = judge([add(1, A), add(12, B), add(24, C, D)], max_workers=4)
    assert verdict.problems == []
    assert verdict.launches == [(1, 1), (1, 1), (2, 2)]
    assert (verdict.adds, verdict.machines_added, verdict.peak_added) == (3, 4, 4)
    assert (verdict.retires, verdict.flaps, verdict.actions_during_steady) == (0, 0, 0)


def test_launching_more_than_upscaling_speed_allows_is_reported() -> None:
    verdict = judge([add(1, A, B)])
    assert verdict.launches == [(2, 1)]
    assert verdict.problems == ["an add launched 2 machine(s) with 0 running and 0 joining: "
                                "upscaling_speed allows 1"]


def test_a_higher_upscaling_speed_allows_more() -> None:
    assert judge([add(1, A), add(12, B, C, D)], max_workers=4, speed=3).problems == []
    assert judge([add(1, A), add(12, B, C, D)], max_workers=4, speed=2).problems != []


def test_a_worker_ray_does_not_list_yet_counts_as_joining_not_running() -> None:
    samples = [alive(11, *()), alive(13, *()), alive(25, A)]
    verdict = judge([add(1, A, end=30), add(12, B)], samples=samples)
    assert verdict.launches[1] == (1, 0)
    assert verdict.problems == ["an add launched 1 machine(s) with 0 running and 1 joining: "
                                "upscaling_speed allows 0"]
    # ALIVE by the second add (its run not ended yet): running, so one more is allowed
    assert judge([add(1, A, end=30), add(12, B)],
                 samples=[alive(11), alive(12.5, A)]).problems == []


def test_without_a_sample_after_an_add_its_machines_are_not_taken_for_joining() -> None:
    # The agent may have seen A ALIVE before any sample did: the check must not be stricter.
    verdict = judge([add(1, A, end=30), add(12, B)], samples=[alive(11)])
    assert verdict.launches[1] == (1, 1)
    assert verdict.problems == []


def test_the_head_counts_as_running_when_it_is_of_the_workers_type() -> None:
    runs = [add(1, A), add(12, B, C)]
    assert judge(runs, head=True).launches == [(1, 1), (2, 2)]
    assert judge(runs, head=True).problems == []
    assert judge(runs, head=False).launches == [(1, 1), (2, 1)]


def test_more_workers_than_max_workers_at_once_is_reported() -> None:
    verdict = judge([add(1, A), add(12, B), add(24, C, D)], max_workers=3, speed=2)
    assert verdict.peak_added == 4
    assert verdict.problems == ["4 workers added at once: max_workers is 3"]


def test_a_failed_add_or_a_retired_worker_no_longer_counts_as_added() -> None:
    runs = [add(1, A, outcome="failed"), add(12, B), retire(30, B), add(40, C), add(52, D)]
    verdict = judge(runs, max_workers=2, speed=1)
    assert verdict.peak_added == 2
    assert "workers added at once" not in " ".join(verdict.problems)


def test_a_machine_retired_and_added_again_within_10_minutes_is_a_flap() -> None:
    verdict = judge([add(1, A), retire(20, A), add(40, A)])
    assert verdict.flaps == 1
    assert verdict.problems == [f"{A} retired and added again 15 s later"]
    assert judge([add(1, A), retire(20, A), add(20 + 5 + 601, A)]).flaps == 0


def test_any_add_or_retire_during_the_steady_load_is_reported() -> None:
    verdict = judge([add(1, A), retire(STEADY + 1, A)])
    assert verdict.actions_during_steady == 1
    assert verdict.problems == [f"retire of {A} during the steady load"]
    assert judge([add(1, A), add(STEADY, B)]).actions_during_steady == 1


def test_runs_before_the_burst_are_left_out() -> None:
    runs = [add(-50, A, B, C, D), retire(-30, A, B, C, D), add(1, A)]
    verdict = burst.judge(runs, [], since=0.0, steady_from=STEADY, max_workers=1,
                          upscaling_speed=1, head_of_worker_type=False)
    assert (verdict.adds, verdict.problems) == (1, [])
