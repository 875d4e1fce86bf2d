"""The agent's crash-safe state: machine lifecycle and playbook runs, in SQLite.

Every change happens in a transaction (WAL, synchronous=FULL), so an agent killed at any
instant leaves either the old state or the new one. `PRAGMA user_version` holds the schema
version; a store written by a newer agent is refused rather than misread. One agent at a time:
an exclusive `flock` on `<db>.lock` is taken on open and held until close.

The inventory plugin reads `machines.ip` and `machines.state` read-only for its lifecycle
overlay: those two columns keep their names and meaning.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from onprem_ray_agent.model import Machine, MachineState

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE machines (
    ip TEXT PRIMARY KEY,
    node_type TEXT NOT NULL,
    state TEXT NOT NULL,
    since REAL NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    last_error TEXT NOT NULL DEFAULT '',
    failures INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    request_id TEXT NOT NULL DEFAULT '',
    success_count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE runs (
    request_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    ips TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    outcome TEXT,
    hosts TEXT NOT NULL DEFAULT '{}',
    output_tail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX runs_started ON runs (started);
"""

_MACHINE_COLUMNS = ("ip", "node_type", "state", "since", "reason", "last_error", "failures",
                    "next_attempt_at", "request_id", "success_count")
_SELECT_MACHINES = ("SELECT ip, node_type, state, since, reason, last_error, failures, "
                    "next_attempt_at, request_id, success_count FROM machines")
_PUT_MACHINE = ("INSERT OR REPLACE INTO machines (ip, node_type, state, since, reason, "
                "last_error, failures, next_attempt_at, request_id, success_count) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_SELECT_RUNS = ("SELECT request_id, kind, ips, started, finished, outcome, hosts, output_tail "
                "FROM runs")


class StoreError(RuntimeError):
    """The state store cannot be used; the message says why and what to do."""


class StoreLocked(StoreError):
    """Another agent holds the store."""


class SchemaTooNew(StoreError):
    """The store was written by a newer agent."""


@dataclass(frozen=True)
class Run:
    """One playbook run: what was asked, and how it ended on each host."""

    request_id: str
    kind: str
    ips: tuple[str, ...]
    started: float
    finished: float | None = None
    outcome: str | None = None  # e.g. successful, failed, canceled; None while running
    hosts: Mapping[str, str] = field(default_factory=dict)  # ip -> ok|failed|unreachable
    output_tail: str = ""


def lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


class StateStore:
    """Open with `StateStore.open(path)`; use as a context manager or call `close()`."""

    def __init__(self, db: sqlite3.Connection, lock_fd: int, path: Path) -> None:
        self._db = db
        self._lock_fd = lock_fd
        self.path = path
        self._in_transaction = False

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> StateStore:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = _take_lock(lock_path(path))
        try:
            db = sqlite3.connect(path, isolation_level=None, timeout=10)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.execute("PRAGMA foreign_keys=ON")
                _migrate(db, path)
            except BaseException:
                db.close()
                raise
        except sqlite3.DatabaseError as err:
            os.close(lock_fd)
            raise StoreError(f"state store {path} cannot be opened: {err}") from err
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(db, lock_fd, path)

    @classmethod
    def open_read_only(cls, path: str | os.PathLike[str]) -> StateStore:
        """For `status` and `--dry-run` beside a running agent: no lock, no writes."""
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"state store {path} does not exist (no agent has run there)")
        try:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                 isolation_level=None, timeout=10)
            try:
                version = db.execute("PRAGMA user_version").fetchone()[0]
            except BaseException:
                db.close()
                raise
        except sqlite3.DatabaseError as err:
            raise StoreError(f"state store {path} cannot be read: {err}") from err
        if version != SCHEMA_VERSION:
            db.close()
            raise SchemaTooNew(f"state store {path} has schema version {version}, this agent "
                               f"reads {SCHEMA_VERSION}")
        return cls(db, -1, path)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = -1

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ transactions

    @contextlib.contextmanager
    def transaction(self) -> Iterator[StateStore]:
        """All writes inside commit together, or none do (also on an exception)."""
        if self._in_transaction:
            yield self  # nested: part of the outer transaction
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._in_transaction = True
        try:
            yield self
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._in_transaction = False

    # ------------------------------------------------------------ machines

    def machines(self) -> dict[str, Machine]:
        rows = self._db.execute(_SELECT_MACHINES + " ORDER BY ip").fetchall()
        return {row[0]: _machine(row) for row in rows}

    def machine(self, ip: str) -> Machine | None:
        row = self._db.execute(_SELECT_MACHINES + " WHERE ip = ?", (ip,)).fetchone()
        return None if row is None else _machine(row)

    def put(self, *machines: Machine) -> None:
        with self.transaction():
            self._db.executemany(
                _PUT_MACHINE,
                [(m.ip, m.node_type, m.state.value, m.since, m.reason, m.last_error,
                  m.failures, m.next_attempt_at, m.request_id, m.success_count)
                 for m in machines],
            )

    def forget(self, *ips: str) -> None:
        with self.transaction():
            self._db.executemany("DELETE FROM machines WHERE ip = ?", [(ip,) for ip in ips])

    # ------------------------------------------------------------ runs

    def start_run(self, request_id: str, kind: str, ips: Iterable[str], started: float) -> None:
        with self.transaction():
            self._db.execute(
                "INSERT INTO runs (request_id, kind, ips, started) VALUES (?, ?, ?, ?)",
                (request_id, kind, json.dumps(list(ips)), started))

    def finish_run(self, request_id: str, finished: float, outcome: str,
                   hosts: Mapping[str, str], output_tail: str = "") -> None:
        with self.transaction():
            updated = self._db.execute(
                "UPDATE runs SET finished = ?, outcome = ?, hosts = ?, output_tail = ? "
                "WHERE request_id = ?",
                (finished, outcome, json.dumps(dict(hosts), sort_keys=True), output_tail,
                 request_id)).rowcount
            if updated != 1:
                raise StoreError(f"no playbook run {request_id!r} to finish")

    def run(self, request_id: str) -> Run | None:
        row = self._db.execute(_SELECT_RUNS + " WHERE request_id = ?",
                               (request_id,)).fetchone()
        return None if row is None else _run(row)

    def runs(self, limit: int = 50, unfinished_only: bool = False) -> list[Run]:
        """The latest runs first."""
        where = " WHERE finished IS NULL" if unfinished_only else ""
        rows = self._db.execute(_SELECT_RUNS + where + " ORDER BY started DESC, request_id "
                                "LIMIT ?", (limit,)).fetchall()
        return [_run(row) for row in rows]

    def prune_runs(self, keep: int) -> None:
        """Keep the `keep` latest runs and every unfinished one."""
        with self.transaction():
            self._db.execute(
                "DELETE FROM runs WHERE finished IS NOT NULL AND request_id NOT IN "
                "(SELECT request_id FROM runs ORDER BY started DESC LIMIT ?)", (keep,))


def _take_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreLocked(
            f"another onprem-ray-agent (pid {holder}) holds the state store lock {path}; "
            "only one agent may run per state store: stop the other one first") from None
    except OSError:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"state store {path} has schema version {version}, this agent knows up to "
            f"{SCHEMA_VERSION}: run the newer agent that wrote it, or move the file away "
            "to start from an empty store")
    if version == SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        if version == 0:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _machine(row: tuple) -> Machine:
    values = dict(zip(_MACHINE_COLUMNS, row, strict=True))
    values["state"] = MachineState(values["state"])
    return Machine(**values)


def _run(row: tuple) -> Run:
    request_id, kind, ips, started, finished, outcome, hosts, tail = row
    return Run(request_id=request_id, kind=kind, ips=tuple(json.loads(ips)), started=started,
               finished=finished, outcome=outcome, hosts=json.loads(hosts), output_tail=tail)
