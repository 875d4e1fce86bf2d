"""The SQLite state store: schema version, atomic transactions (also across a kill), one
writer at a time (checked with a real second process), playbook runs."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from onprem_ray_agent.model import Machine, MachineState
from onprem_ray_agent.store import (
    SCHEMA_VERSION,
    SchemaTooNew,
    StateStore,
    StoreError,
    StoreLocked,
    lock_path,
)

AGENT_DIR = Path(__file__).resolve().parent.parent


def _machine(ip: str, state: str = "spare", **kwargs) -> Machine:
    return Machine(ip=ip, node_type="cpu", state=MachineState(state), since=100.0, **kwargs)


def _python(code: str, db: Path, **kwargs) -> subprocess.Popen:
    """Run `code` in another Python process that can import the agent, with DB = db."""
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(AGENT_DIR), *sys.path])}
    program = f"from pathlib import Path\nDB = Path({str(db)!r})\n" + textwrap.dedent(code)
    return subprocess.Popen([sys.executable, "-c", program], env=env, text=True, **kwargs)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "agent.db"


def test_a_new_store_has_the_schema_wal_and_the_columns_the_inventory_reads(db) -> None:
    with StateStore.open(db):
        pass
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    columns = [row[1] for row in raw.execute("PRAGMA table_info(machines)")]
    assert columns == ["ip", "node_type", "state", "since", "reason", "last_error", "failures",
                       "next_attempt_at", "request_id", "success_count"]
    assert {row[1] for row in raw.execute("PRAGMA table_info(runs)")} >= {
        "request_id", "kind", "ips", "started", "finished", "outcome", "hosts", "output_tail"}


def test_machines_round_trip(db) -> None:
    full = _machine("10.0.1.2", "failed", reason="unreachable", last_error="ssh: timeout",
                    failures=2, next_attempt_at=160.0, request_id="add-cpu-1", success_count=4)
    with StateStore.open(db) as store:
        store.put(_machine("10.0.1.10", "active"), full)
        store.forget("10.0.1.10")
        store.put(_machine("10.0.1.3"))
    with StateStore.open(db) as store:
        assert store.machines() == {"10.0.1.2": full, "10.0.1.3": _machine("10.0.1.3")}
        assert store.machine("10.0.1.2") == full
        assert store.machine("10.0.1.99") is None


def test_a_store_from_a_newer_agent_is_refused_by_name(db) -> None:
    db.parent.mkdir(parents=True)
    raw = sqlite3.connect(db)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(SchemaTooNew, match=rf"schema version {SCHEMA_VERSION + 1}, this "
                                           rf"agent knows up to {SCHEMA_VERSION}"):
        StateStore.open(db)
    with pytest.raises(SchemaTooNew):  # the lock was released: the same error, not "locked"
        StateStore.open(db)


def test_a_file_that_is_not_a_store_is_refused(db) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot be opened"):
        StateStore.open(db)


def test_an_exception_inside_a_transaction_leaves_the_old_state(db) -> None:
    with StateStore.open(db) as store:
        store.put(_machine("10.0.1.1", "spare"))
        with pytest.raises(RuntimeError), store.transaction():
            store.put(_machine("10.0.1.1", "joining"))
            store.put(_machine("10.0.1.2", "joining"))
            raise RuntimeError("the playbook could not start")
        assert store.machines() == {"10.0.1.1": _machine("10.0.1.1", "spare")}


def test_writes_in_one_transaction_commit_together(db) -> None:
    with StateStore.open(db) as store, store.transaction():
        store.put(_machine("10.0.1.1", "joining"))
        store.start_run("add-1", "add", ["10.0.1.1"], 5.0)
    with StateStore.open(db) as store:
        assert store.machine("10.0.1.1").state == MachineState.JOINING
        assert store.run("add-1").ips == ("10.0.1.1",)


def test_an_agent_killed_inside_a_transaction_leaves_the_old_state(db) -> None:
    child = _python("""
        import os, signal
        from onprem_ray_agent.model import Machine, MachineState
        from onprem_ray_agent.store import StateStore
        store = StateStore.open(DB)
        store.put(Machine("10.0.1.1", "cpu", MachineState.SPARE, 1.0))
        with store.transaction():
            store.put(Machine("10.0.1.1", "cpu", MachineState.JOINING, 2.0))
            store.start_run("add-1", "add", ["10.0.1.1"], 2.0)
            os.kill(os.getpid(), signal.SIGKILL)
    """, db)
    assert child.wait(timeout=60) == -9
    with StateStore.open(db) as store:
        assert store.machines() == {"10.0.1.1": Machine("10.0.1.1", "cpu",
                                                        MachineState.SPARE, 1.0)}
        assert store.runs() == []


def test_a_second_agent_is_refused_while_the_first_runs(db) -> None:
    child = _python("""
        import sys
        from onprem_ray_agent.store import StateStore
        with StateStore.open(DB):
            print("ready", flush=True)
            sys.stdin.readline()
    """, db, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLocked, match=rf"another onprem-ray-agent \(pid {child.pid}\) "
                                              r"holds the state store lock .*agent\.db\.lock"):
            StateStore.open(db)
    finally:
        child.stdin.close()
        assert child.wait(timeout=60) == 0
    with StateStore.open(db):  # the first one has stopped: the lock is free again
        pass


def test_a_lock_dies_with_its_process(db) -> None:
    child = _python("""
        import os, signal
        from onprem_ray_agent.store import StateStore
        StateStore.open(DB)
        os.kill(os.getpid(), signal.SIGKILL)
    """, db)
    assert child.wait(timeout=60) == -9
    with StateStore.open(db):
        pass
    assert lock_path(db).exists()


def test_a_second_open_in_the_same_process_is_refused_too(db) -> None:
    with StateStore.open(db), pytest.raises(StoreLocked):
        StateStore.open(db)


def test_the_inventory_plugin_can_read_while_the_agent_holds_the_lock(db) -> None:
    with StateStore.open(db) as store:
        store.put(_machine("10.0.1.1", "active"), _machine("10.0.1.2", "quarantined"))
        reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        assert reader.execute("SELECT ip, state FROM machines ORDER BY ip").fetchall() == [
            ("10.0.1.1", "active"), ("10.0.1.2", "quarantined")]
        reader.close()


def test_playbook_runs(db) -> None:
    with StateStore.open(db) as store:
        store.start_run("add-1", "add", ["10.0.1.1", "10.0.1.2"], 10.0)
        store.start_run("retire-1", "retire", ["10.0.1.3"], 20.0)
        store.finish_run("add-1", 15.0, "failed", {"10.0.1.1": "ok", "10.0.1.2": "unreachable"},
                         "fatal: [10.0.1.2]: UNREACHABLE! ...")
        assert [r.request_id for r in store.runs()] == ["retire-1", "add-1"]
        assert [r.request_id for r in store.runs(unfinished_only=True)] == ["retire-1"]
        done = store.run("add-1")
        assert done.hosts == {"10.0.1.1": "ok", "10.0.1.2": "unreachable"}
        assert (done.outcome, done.finished) == ("failed", 15.0)
        assert "UNREACHABLE" in done.output_tail
        with pytest.raises(StoreError, match="no playbook run 'nope'"):
            store.finish_run("nope", 1.0, "ok", {})
        store.start_run("add-2", "add", ["10.0.1.4"], 30.0)
        store.finish_run("add-2", 31.0, "successful", {"10.0.1.4": "ok"})
        store.prune_runs(keep=1)
        assert {r.request_id for r in store.runs()} == {"add-2", "retire-1"}


def test_a_read_only_store_reads_beside_the_writer_and_cannot_write(tmp_path):
    from onprem_ray_agent.store import StoreError

    path = tmp_path / "state.db"
    with pytest.raises(StoreError, match="does not exist"):
        StateStore.open_read_only(path)
    writer = StateStore.open(path)
    try:
        writer.put(Machine(ip="10.0.1.1", node_type="cpu", since=5.0))
        reader = StateStore.open_read_only(path)
        try:
            assert list(reader.machines()) == ["10.0.1.1"]
            with pytest.raises(sqlite3.OperationalError):
                reader.put(Machine(ip="10.0.1.2", node_type="cpu"))
        finally:
            reader.close()
        writer.put(Machine(ip="10.0.1.3", node_type="cpu"))  # the writer keeps its lock
    finally:
        writer.close()
