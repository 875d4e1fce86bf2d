"""The simulated pool (1,000 machines in 3 node types) and a day of synthetic demand.

Seeded: the same seed gives the same trace. Demand follows a daily cycle (quiet at 02:00, busiest
at 14:00), with bursts of many short tasks, large-memory jobs, short GPU tasks and long GPU
training jobs as placement groups.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from sim.trace import PLACEMENT_GROUP, Shape, Work, shape_of

GIB = 1024**3
HOUR = 3600.0


@dataclass(frozen=True)
class PoolType:
    name: str
    machines: int
    resources: dict[str, float]
    subnet: str  # addresses <subnet>.<i // 250>.<i % 250 + 1>

    def ips(self) -> tuple[str, ...]:
        return tuple(f"{self.subnet}.{i // 250}.{i % 250 + 1}" for i in range(self.machines))


# Address order is Ray's placement order in the simulation: CPU boxes first.
POOL = (
    PoolType("cpu", 700, {"CPU": 32, "memory": 128 * GIB}, "10.1"),
    PoolType("highmem", 200, {"CPU": 32, "memory": 1024 * GIB}, "10.2"),
    PoolType("gpu", 100, {"CPU": 32, "GPU": 8, "memory": 512 * GIB}, "10.3"),
)
HEAD_IP = "10.0.0.1"


def scaled_pool(fraction: float) -> tuple[PoolType, ...]:
    """The same pool with `fraction` of the machines (at least one of each type)."""
    return tuple(PoolType(t.name, max(1, round(t.machines * fraction)), t.resources, t.subnet)
                 for t in POOL)


def daily(t: float) -> float:
    """Load factor of the daily cycle: 0.1 at 02:00, 1.0 at 14:00."""
    return 0.55 - 0.45 * math.cos(2 * math.pi * (t / HOUR - 2.0) / 24.0)


def _lognormal(rng: random.Random, median: float, sigma: float, low: float, high: float
               ) -> float:
    return min(high, max(low, rng.lognormvariate(math.log(median), sigma)))


def _poisson_times(rng: random.Random, peak_per_hour: float, hours: float,
                   factor=daily) -> list[float]:
    """Arrival times of a Poisson process of rate peak x factor(t), by thinning."""
    times, t, end = [], 0.0, hours * HOUR
    rate = peak_per_hour / HOUR
    while True:
        t += rng.expovariate(rate)
        if t >= end:
            return times
        if rng.random() < factor(t):
            times.append(t)


@dataclass(frozen=True)
class Mix:
    """How much of each kind of demand; `scale` multiplies every arrival rate (a smaller pool
    gets proportionally less demand)."""

    scale: float = 1.0
    cpu_jobs_per_hour: float = 430.0  # at the daily peak
    bursts_per_day: float = 4.0
    burst_tasks: int = 6000
    highmem_jobs_per_hour: float = 40.0
    gpu_task_jobs_per_hour: float = 30.0
    gpu_training_per_hour: float = 3.0


def synthetic(seed: int, hours: float = 24.0, mix: Mix = Mix()) -> list[Work]:
    rng = random.Random(seed)  # noqa: S311 - reproducible demand, not secrets
    s = mix.scale
    works: list[Work] = []
    one_cpu: Shape = shape_of({"CPU": 1})
    four_cpu: Shape = shape_of({"CPU": 4, "memory": 8 * GIB})
    # CPU batch jobs: many short tasks, following the daily cycle.
    for t in _poisson_times(rng, mix.cpu_jobs_per_hour * s, hours):
        shape = one_cpu if rng.random() < 0.7 else four_cpu
        count = int(_lognormal(rng, 64, 1.0, 1, 2000))
        works.append(Work(t, "task", _lognormal(rng, 360, 0.8, 30, 2 * HOUR), shape, count))
    # Bursts: a sweep of thousands of 1-CPU tasks at any hour.
    for t in _poisson_times(rng, mix.bursts_per_day * s / 24.0, hours, factor=lambda _: 1.0):
        works.append(Work(t, "task", _lognormal(rng, 300, 0.3, 60, 1800), one_cpu,
                          max(1, int(mix.burst_tasks * s ** 0.5))))
    # Large-memory jobs: actors holding 400 GiB each for tens of minutes.
    big: Shape = shape_of({"CPU": 8, "memory": 400 * GIB})
    for t in _poisson_times(rng, mix.highmem_jobs_per_hour * s, hours):
        works.append(Work(t, "actor", _lognormal(rng, 1800, 0.6, 300, 4 * HOUR), big,
                          rng.randint(1, 16)))
    # Short GPU tasks (inference, evaluation).
    gpu_task: Shape = shape_of({"CPU": 4, "GPU": 1})
    for t in _poisson_times(rng, mix.gpu_task_jobs_per_hour * s, hours):
        works.append(Work(t, "task", _lognormal(rng, 600, 0.5, 60, HOUR), gpu_task,
                          rng.randint(1, 32)))
    # Long GPU training: whole GPU boxes, gang-scheduled, for hours.
    trainer: Shape = shape_of({"CPU": 16, "GPU": 8})
    for t in _poisson_times(rng, mix.gpu_training_per_hour * s, hours,
                            factor=lambda t: 0.5 + 0.5 * daily(t)):
        nodes = min(8, 1 + int(rng.expovariate(1 / 1.5)))
        works.append(Work(t, PLACEMENT_GROUP, _lognormal(rng, 3 * HOUR, 0.6, 1200, 12 * HOUR),
                          bundles=(trainer,) * nodes,
                          strategy="STRICT_SPREAD" if nodes > 1 else "PACK"))
    works.sort(key=lambda w: w.t)
    return works
