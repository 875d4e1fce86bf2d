"""The kill loop's bookkeeping (bench/chaos.py) against a scripted pool: which kills landed
mid-run, which were survived, and that a loss found after a kill fails the loop. The real
loop runs on the local test pool (`python bench/chaos.py`)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import faults

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import chaos

HEAD = "10.9.0.10"
WORKERS = ["10.9.0.11", "10.9.0.12", "10.9.0.13"]


@dataclass
class ScriptedPool:
    """An agent and Ray that do at once what the real ones do within a few seconds: a run
    shows under way for the phase, a kill restarts the agent, and the pool then settles."""

    land: bool = True  # the kill finds the run still under way
    comes_back: bool = True
    leaves_joining: bool = False  # a machine stays joining after the kill
    actors: int = 0
    run: dict[str, Any] | None = None
    active: set[str] = field(default_factory=set)
    restarts: int = 0
    log: list[str] = field(default_factory=list)
    pool: Any = None

    head_ip = HEAD
    inventory = WORKERS
    worker_cpus = 2.0

    def ssh(self, *remote: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        assert remote == ("sudo", "systemctl", "kill", "--signal=KILL", chaos.UNIT), remote
        if self.comes_back:
            self.restarts += 1
        if self.run and self.land:
            self.log.append(f"run {self.run['request_id']} (...) has no final status: "
                            f"{chaos.INTERRUPTED}")
        self.run = None
        self.active = set(WORKERS[:self.actors])
        return subprocess.CompletedProcess(remote, 0, "", "")

    def ray(self, script: str, *args: str, timeout: float = 180
            ) -> subprocess.CompletedProcess[str]:
        if script == chaos.CREATE:
            self.actors = int(args[2])
            self.run = {"request_id": "add-1", "kind": "add", "ips": WORKERS[:self.actors]}
        elif script == chaos.KILL_ACTORS:
            self.actors = 0
            self.run = {"request_id": "retire-1", "kind": "retire", "ips": sorted(self.active)}
        return subprocess.CompletedProcess(script, 0, "", "")

    def status(self) -> tuple[dict[str, Any] | None, str]:
        def state(ip: str) -> str:
            if self.run and ip in self.run["ips"]:
                return "joining" if self.run["kind"] == "add" else "draining"
            if self.leaves_joining and ip == WORKERS[-1]:
                return "joining"
            return "active" if ip in self.active else "spare"
        return {"machines": [{"ip": ip, "state": state(ip)} for ip in WORKERS],
                "running": [self.run] if self.run else []}, ""

    def nodes(self) -> list[dict[str, Any]]:
        return [{"ip": HEAD, "head": True}] + [{"ip": ip, "head": False} for ip in self.active]

    def unit(self) -> dict[str, str]:
        return {"ActiveState": "active", "MainPID": str(100 + self.restarts),
                "NRestarts": str(self.restarts)}

    def journal_since(self, since: float) -> str:
        lines, self.log = self.log, []
        return "\n".join(lines)

    def placed(self, name: str, count: int, timeout: float) -> tuple[list[str] | None, str]:
        return [HEAD, *sorted(self.active)][:count], ""


@pytest.fixture(autouse=True)
def _diagnostics_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chaos, "DIAGNOSTICS", tmp_path)


def loop(scripted: ScriptedPool, kills: int) -> chaos.Outcome:
    scripted.pool = type("P", (), {"name": "scripted"})()
    return chaos.kill_loop(scripted, kills=kills, seed=7, max_delay_s=0.0,  # type: ignore[arg-type]
                           settle_s=0.0, log=lambda _: None)


def test_kills_that_land_mid_run_and_leave_nothing_lost_pass() -> None:
    outcome = loop(ScriptedPool(), kills=4)
    counts = outcome.counts()
    assert [k.phase for k in outcome.kills] == ["add", "retire", "add", "retire"]
    assert all(k.run for k in outcome.kills)
    assert counts["kills sent"] == 4
    assert counts["kills that landed mid-run (a run recorded interrupted)"] == 4
    assert counts["kills survived"] == 4
    assert all(counts[name] == 0 for name in faults.MUST_BE_ZERO)
    assert not outcome.failed
    assert "| kills survived" in chaos.table(outcome)


def test_a_kill_after_the_run_ended_did_not_land() -> None:
    outcome = loop(ScriptedPool(land=False), kills=2)
    assert outcome.counts()["kills that landed mid-run (a run recorded interrupted)"] == 0
    assert not outcome.failed  # landing is reported, not required


def test_an_agent_that_does_not_come_back_fails_the_loop(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setattr(chaos, "BACK_WITHIN_S", 0.0)
    outcome = loop(ScriptedPool(comes_back=False), kills=2)
    assert outcome.counts()["kills survived"] == 0
    assert outcome.failed


def test_a_machine_left_joining_is_counted_and_fails_the_loop(tmp_path: Path) -> None:
    outcome = loop(ScriptedPool(leaves_joining=True), kills=2)
    assert outcome.counts()[faults.STUCK_JOINING] == 2
    assert outcome.failed
    assert len(list(tmp_path.glob("scripted-kill-*.txt"))) == 2  # the details written
