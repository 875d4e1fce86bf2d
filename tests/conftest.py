"""Shared fixtures: the local test pool (real containers, real SSH, real systemd)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.pool import pool as pools

POOL_NAME = os.environ.get("ONPREM_RAY_TEST_POOL", "pytest")
POOL_MACHINES = int(os.environ.get("ONPREM_RAY_TEST_POOL_MACHINES", "4"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--keep-pool", action="store_true",
                     help="leave the test pool running after the session (for debugging)")


@pytest.fixture(scope="session")
def pool(request: pytest.FixtureRequest) -> Iterator[pools.Pool]:
    """A pool of machines: one meant as head, the rest as workers.

    Whatever a crashed earlier session left under the same name is removed first.
    """
    pools.remove(POOL_NAME)
    created = pools.create(POOL_NAME, machines=POOL_MACHINES)
    yield created
    if not request.config.getoption("--keep-pool"):
        pools.remove(POOL_NAME)
