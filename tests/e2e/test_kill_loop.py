"""The kill loop, short: the agent SIGKILLed under systemd during its adds and retires on the
local test pool, and after each kill the checks of tests/faults.py (every machine recorded
once, in a state that agrees with Ray; none in two runs; no run left running; the store opens;
the pending actors run). The long loop (50 kills) is `python bench/chaos.py`; this one runs
the same code with KILLS kills, soon after the run was seen, so most land mid-run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import faults
from tests.cluster import stop_workers
from tests.pool import pool as pools
from tests.pool.wheelhouse import ensure_wheelhouse

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import chaos

pytestmark = [pytest.mark.pool, pytest.mark.e2e]

KILLS = 10  # 5 during adds, 5 during retires
SEED = 20261201
IDLE_S = 10.0
MAX_DELAY_S = 3.0


@pytest.fixture(scope="module")
def prepared(pool: pools.Pool, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[chaos.Chaos]:
    assert len(pool.workers) >= 3, "the loop needs a head and 3 workers (POOL_MACHINES=4)"
    # Workers a former test left running would be retired as idle: start from none.
    stop_workers(pool)
    made = chaos.prepare(pool, ensure_wheelhouse(), IDLE_S, tmp_path_factory.mktemp("chaos"))
    yield made
    chaos.release(made)


def test_the_agent_killed_during_adds_and_retires_loses_nothing(
        prepared: chaos.Chaos) -> None:
    outcome = chaos.kill_loop(prepared, KILLS, SEED, max_delay_s=MAX_DELAY_S)
    print(chaos.table(outcome))
    counts = outcome.counts()
    assert [k.phase for k in outcome.kills] == ["add", "retire"] * (KILLS // 2), counts
    assert counts["kills survived"] == KILLS, counts
    # A kill that always came after its run ended would prove nothing about runs cut short.
    assert counts["kills that landed mid-run (a run recorded interrupted)"] >= 1, counts
    assert not outcome.failed and outcome.total.clean, counts
    assert all(counts[name] == 0 for name in faults.MUST_BE_ZERO), counts
