"""How long the agent's playbooks take, as triangular distributions (low, median, high).

Source: `bench/agent.py` on the local pool (head + 3 spares, one iteration a second), 20
scale-up/scale-down cycles, per phase from the agent's log and ansible-runner's events:

    phase                                median   min    max   (s)
    detection + decision                  1.0    0.2    1.5   <- the simulated loop interval
    playbook start                        0.7    0.6    1.0
    playbook until Ray's unit starts      2.4    2.0    3.2
    ray start + registration              4.7    4.2    6.1
    demand -> worker ALIVE                8.7    8.0    9.9
    idle timeout expiry -> gone from Ray  3.6    2.5    4.9

Detection is not drawn: the simulation decides on its own loop interval, as the agent does.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Triangular:
    low: float
    mode: float
    high: float

    def draw(self, rng: random.Random) -> float:
        return rng.triangular(self.low, self.high, self.mode)


@dataclass(frozen=True)
class Latencies:
    # add_workers, decided -> the node ALIVE in Ray: the three phases after the decision
    playbook_start: Triangular = Triangular(0.6, 0.7, 1.0)
    until_ray_unit: Triangular = Triangular(2.0, 2.4, 3.2)
    ray_start: Triangular = Triangular(4.2, 4.7, 6.1)
    # retire_workers, decided -> the drain asked of Ray: the playbook's start
    drain_asked: Triangular = Triangular(0.6, 0.7, 1.0)
    # retire_workers, decided -> gone from Ray: the measured expiry -> gone, less the half
    # second of detection it includes at one iteration a second
    gone: Triangular = Triangular(2.0, 3.1, 4.4)

    def add(self, rng: random.Random) -> float:
        return (self.playbook_start.draw(rng) + self.until_ray_unit.draw(rng)
                + self.ray_start.draw(rng))

    def drain(self, rng: random.Random) -> float:
        return self.drain_asked.draw(rng)

    def retire(self, rng: random.Random, drain_at: float) -> float:
        return max(drain_at + 0.1, self.gone.draw(rng))
