"""A burst, short: 200 pending actors at once on the local test pool with max_workers below the
pool's size, then a minute of steady load. The agent adds no more than max_workers, each add
within upscaling_speed, and makes no add or retire while the load stays. The long run (a pool
of 6, 10 minutes of steady load) is `python bench/burst.py`; this one runs the same code.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import stop_workers
from tests.pool import pool as pools
from tests.pool.wheelhouse import ensure_wheelhouse

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import burst
import chaos

pytestmark = [pytest.mark.pool, pytest.mark.e2e]

ACTORS = 200
MAX_WORKERS = 2
UPSCALING_SPEED = 1.0
STEADY_S = 60.0
IDLE_S = 10.0  # short, so that a busy worker taken for idle would be retired within the minute


@pytest.fixture(scope="module")
def prepared(pool: pools.Pool, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[chaos.Chaos]:
    assert len(pool.workers) > MAX_WORKERS, "the cap must be below the pool's workers"
    # Workers a former test left running would count against max_workers: start from none.
    stop_workers(pool)
    made = chaos.prepare(pool, ensure_wheelhouse(), IDLE_S, tmp_path_factory.mktemp("burst"),
                         max_workers=MAX_WORKERS, upscaling_speed=UPSCALING_SPEED)
    yield made
    chaos.release(made)


def test_a_burst_of_200_actors_stays_within_the_limits_and_does_not_flap(
        prepared: chaos.Chaos) -> None:
    outcome = burst.burst(prepared, ACTORS, MAX_WORKERS, UPSCALING_SPEED, STEADY_S)
    print(burst.table(outcome))
    verdict = outcome.verdict
    assert outcome.served_s is not None, "max_workers workers never became ALIVE"
    # The demand far exceeds the cap: the agent added exactly max_workers machines, one at a
    # time at first (upscaling_speed 1 with nothing running allows one).
    assert verdict.machines_added == MAX_WORKERS, burst.table(outcome)
    assert verdict.launches and verdict.launches[0] == (1, 1), verdict.launches
    assert outcome.peak_alive == MAX_WORKERS, burst.table(outcome)
    assert outcome.samples > STEADY_S / 4, "too few samples of Ray's nodes"
    assert verdict.retires == 0 and verdict.flaps == 0, verdict.problems
    assert verdict.problems == [], verdict.problems
    assert outcome.checks.clean, outcome.checks.messages
