"""A damaged state store: truncated, garbage, a wrong schema version, inconsistent records,
on a full disk (a real, small tmpfs). The agent refuses to act and says why and what to do;
`--rebuild-state` rebuilds the store from Ray and the inventory, losing no machine."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from decide_fixtures import ip
from loop_fakes import FakeRay, FakeRunner, _node

from onprem_ray_agent.config import load_config
from onprem_ray_agent.loop import Agent
from onprem_ray_agent.model import Machine, MachineState
from onprem_ray_agent.service import Options, Signals, run
from onprem_ray_agent.store import (
    REBUILD_HINT,
    SCHEMA_VERSION,
    SchemaTooNew,
    StateStore,
    StoreDamaged,
    StoreFull,
)

CPU = [ip("cpu", i) for i in (1, 2, 3)]
def healthy_store(state_dir: Path) -> Path:
    """A store an agent wrote: 3 machines, one active in a finished run, one joining."""
    path = state_dir / "state.db"
    with StateStore.open(path) as store:
        store.put(Machine(CPU[0], "cpu", MachineState.ACTIVE, 10.0, request_id="add-1"),
                  Machine(CPU[1], "cpu", MachineState.JOINING, 20.0, request_id="add-2"),
                  Machine(CPU[2], "cpu", MachineState.QUARANTINED, 30.0, failures=5))
        store.start_run("add-1", "add", [CPU[0]], 5.0)
        store.finish_run("add-1", 9.0, "successful", {CPU[0]: "ok"})
        store.start_run("add-2", "add", [CPU[1]], 20.0)
        for n in range(40):  # pages beyond the first, so that a truncation cuts records
            store.start_run(f"old-{n}", "add", [CPU[2]], float(n))
            store.finish_run(f"old-{n}", n + 1.0, "failed", {CPU[2]: "failed"}, "x" * 400)
    return path


def truncate(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size // 2)


def garbage(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[100:4096] = os.urandom(3996)  # the schema page, after the header
    path.write_bytes(bytes(data))


def raw(path: Path, *statements: str) -> None:
    db = sqlite3.connect(path)
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


DAMAGES = {
    "truncated": truncate,
    "garbage": garbage,
    "not sqlite": lambda path: path.write_bytes(b"state of the agent\n" * 300),
    "empty file with a stray table": lambda path: (path.unlink(), raw(path, "CREATE TABLE x (y)")),
    "schema version from a newer agent": lambda path: raw(
        path, f"PRAGMA user_version = {SCHEMA_VERSION + 1}"),
    "negative schema version": lambda path: raw(path, "PRAGMA user_version = -3"),
    "schema version reset to 0": lambda path: raw(path, "PRAGMA user_version = 0"),
    "unknown state": lambda path: raw(path, "UPDATE machines SET state = 'running' "
                                            "WHERE ip = '10.0.1.1'"),
    "text where a time belongs": lambda path: raw(path, "UPDATE machines SET since = 'soon'"),
    "negative failure count": lambda path: raw(path, "UPDATE machines SET failures = -1"),
    "run ips not JSON": lambda path: raw(path, "UPDATE runs SET ips = '10.0.1.1,' "
                                               "WHERE request_id = 'add-2'"),
    "run of an unknown kind": lambda path: raw(path, "UPDATE runs SET kind = 'reboot' "
                                                     "WHERE request_id = 'add-1'"),
    "a machine in two unfinished runs": lambda path: raw(
        path, "INSERT INTO runs (request_id, kind, ips, started) "
              "VALUES ('add-3', 'add', '[\"10.0.1.2\"]', 21)"),
    "text that is not UTF-8": lambda path: raw(
        path, "UPDATE machines SET reason = CAST(x'80ff' AS TEXT)"),
    "finished run without an outcome": lambda path: raw(
        path, "UPDATE runs SET outcome = NULL WHERE request_id = 'add-1'"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_store_is_refused_with_what_to_do(tmp_path, damage):
    path = healthy_store(tmp_path)
    DAMAGES[damage](path)
    with pytest.raises(StoreDamaged) as refused:
        StateStore.open(path)
    message = str(refused.value)
    assert str(path) in message
    assert "--rebuild-state" in message or isinstance(refused.value, SchemaTooNew)
    assert "rebuild" in message
    with pytest.raises(StoreDamaged):  # also for status, which reads without the lock
        StateStore.open_read_only(path)
    with pytest.raises(StoreDamaged):  # the lock was released: the same refusal again
        StateStore.open(path)


def test_the_healthy_store_the_damages_start_from_opens(tmp_path):
    path = healthy_store(tmp_path)
    with StateStore.open(path) as store:
        assert len(store.machines()) == 3
        assert [r.request_id for r in store.runs(unfinished_only=True)] == ["add-2"]


def test_the_agent_refuses_to_act_on_a_damaged_store_with_exit_status_4(
        tmp_path, cluster_file, caplog):
    path = healthy_store(tmp_path / "state")
    truncate(path)
    ray, runner = FakeRay(), FakeRunner(pool=frozenset(CPU))
    ray.want(3, CPU=4)
    with caplog.at_level(logging.ERROR, "onprem_ray_agent"):
        code = run(Options(cluster_file=cluster_file, state_dir=tmp_path / "state",
                           gcs_address="127.0.0.1:1", once=True, metrics_port=0),
                   signals=Signals(), ray=ray, runner=runner)
    assert code == 4
    assert runner.started == []
    assert REBUILD_HINT in caplog.text and str(path) in caplog.text


def rebuild(tmp_path, cluster_file, ray) -> int:
    return run(Options(cluster_file=cluster_file, state_dir=tmp_path / "state",
                       gcs_address="127.0.0.1:1", rebuild_state=True, metrics_port=0),
               signals=Signals(), ray=ray, echo=lambda line: None)


def test_rebuild_state_makes_alive_workers_active_and_the_others_spares(tmp_path, cluster_file):
    path = healthy_store(tmp_path / "state")
    garbage(path)
    damaged = path.read_bytes()
    ray = FakeRay()
    ray.alive("cpu", 1, busy=True)
    ray.alive("cpu", 3, busy=True)
    ray.nodes["10.9.9.9"] = _node("10.9.9.9", {}, 0.0, True)
    assert rebuild(tmp_path, cluster_file, ray) == 0
    with StateStore.open(path) as store:
        records = store.machines()
        assert {m.ip: m.state.value for m in records.values()} == {
            CPU[0]: "active", CPU[1]: "spare", CPU[2]: "active"}
        assert all(m.failures == 0 and "--rebuild-state" in m.reason for m in records.values())
        assert store.runs() == []
    (kept,) = path.parent.glob("state.db.damaged-*[0-9]Z")
    assert kept.read_bytes() == damaged
    # The agent runs on it: the machine Ray lists that the inventory lacks is never recorded,
    # the pool is whole, and demand is served from the spare.
    ray.want(1, CPU=4)
    runner = FakeRunner(pool=frozenset(CPU))
    with StateStore.open(path) as store:
        agent = Agent(load_config(cluster_file).config, store, ray, runner)
        agent.reconcile(time.time())
        report = agent.iterate(time.time())
        assert [a.kind.value for a in report.acted] == ["add"], report
        assert [started.ips for started in runner.started] == [(CPU[1],)]
        assert set(store.machines()) == set(CPU)


def test_rebuild_state_changes_nothing_when_ray_does_not_answer(tmp_path, cluster_file, caplog):
    path = healthy_store(tmp_path / "state")
    truncate(path)
    before = path.read_bytes()
    ray = FakeRay()
    ray.down = "connection refused"
    with caplog.at_level(logging.ERROR, "onprem_ray_agent"):
        assert rebuild(tmp_path, cluster_file, ray) == 3
    assert "Ray must answer" in caplog.text
    assert path.read_bytes() == before
    assert list(path.parent.glob("state.db.damaged-*")) == []


def test_rebuild_state_is_refused_while_an_agent_holds_the_store(tmp_path, cluster_file):
    path = healthy_store(tmp_path / "state")
    with StateStore.open(path):
        assert rebuild(tmp_path, cluster_file, FakeRay()) == 3
    assert list(path.parent.glob("state.db.damaged-*")) == []
    with StateStore.open(path) as store:  # untouched
        assert store.machine(CPU[2]).state == MachineState.QUARANTINED


def test_rebuild_state_from_the_command_line_reaches_the_rebuild(monkeypatch, tmp_path):
    from onprem_ray_agent import cli, service

    seen = []
    monkeypatch.setattr(service, "run", lambda options: seen.append(options) or 0)
    assert cli.main(["--cluster-file", "c.yml", "--state-dir", str(tmp_path),
                     "--gcs-address", "10.0.0.1:6379", "--rebuild-state"]) == 0
    assert [o.rebuild_state for o in seen] == [True]
    assert cli.main(["--cluster-file", "c.yml", "--state-dir", str(tmp_path),
                     "--gcs-address", "10.0.0.1:6379"]) == 0
    assert [o.rebuild_state for o in seen] == [True, False]


# ---------------------------------------------------------------- a full disk, for real


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs (needs root, as CI has); `fill()` takes its last free byte."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")

    def fill() -> None:
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for chunk in (65536, 4096, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * chunk)
                except OSError as err:
                    assert err.errno == 28, err
        finally:
            os.close(fd)
        assert os.statvfs(mount).f_bavail == 0

    yield mount, fill
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_store_on_a_full_disk_is_refused_as_full_not_damaged(small_disk):
    mount, fill = small_disk
    path = mount / "state" / "state.db"
    with StateStore.open(path) as store:
        store.put(Machine(CPU[0], "cpu"))
    fill()
    with pytest.raises(StoreFull, match=rf"no space left .*free space under {mount}/state"):
        StateStore.open(path)
    (mount / "filler").unlink()
    with StateStore.open(path) as store:  # space freed: nothing lost
        assert list(store.machines()) == [CPU[0]]


def test_an_agent_whose_disk_fills_up_starts_nothing_and_exits_3(small_disk, cluster_file,
                                                                    caplog):
    mount, fill = small_disk
    state_dir = mount / "state"
    ray, runner = FakeRay(), FakeRunner(pool=frozenset(CPU))
    signals = Signals()
    opts = Options(cluster_file=cluster_file, state_dir=state_dir, gcs_address="127.0.0.1:1",
                   interval_s=0.01, metrics_port=0)
    iterations = 0
    real_snapshot = ray.snapshot

    def snapshot():  # the disk fills up after the first iteration; then demand comes
        nonlocal iterations
        iterations += 1
        if iterations == 2:
            fill()
            ray.want(2, CPU=4)
        if iterations > 20:
            signals.stop.set()
        return real_snapshot()

    ray.snapshot = snapshot
    with caplog.at_level(logging.ERROR, "onprem_ray_agent"):
        code = run(opts, signals=signals, ray=ray, runner=runner)
    assert code == 3
    assert iterations == 2
    assert runner.started == []
    assert "no space left" in caplog.text and "free space under" in caplog.text
    (mount / "filler").unlink()
    with StateStore.open(state_dir / "state.db") as store:  # what was recorded is intact
        assert {m.state.value for m in store.machines().values()} == {"spare"}
        assert store.runs() == []
    assert json.loads((state_dir / "status.json").read_text())["ray_error"] == ""
