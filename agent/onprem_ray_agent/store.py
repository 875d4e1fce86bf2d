"""The agent's crash-safe state: machine lifecycle and playbook runs, in SQLite.

Every change happens in a transaction (WAL, synchronous=FULL), so an agent killed at any
instant leaves either the old state or the new one. `PRAGMA user_version` holds the schema
version; a store written by a newer agent is refused rather than misread. One agent at a time:
an exclusive `flock` on `<db>.lock` is taken on open and held until close.

A damaged store (not SQLite, truncated, an unknown schema version, a record that breaks the
rules `_check_contents` lists) is refused with `StoreDamaged`, whose message says to rebuild it
(`--rebuild-state`, rebuild.py); a full disk with `StoreFull`, which passes once space is freed.

The inventory plugin reads `machines.ip` and `machines.state` read-only for its lifecycle
overlay: those two columns keep their names and meaning.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import sqlite3
import time
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


class StoreDamaged(StoreError):
    """The store cannot be trusted (corrupt, truncated, wrong schema, inconsistent records):
    the agent acts on nothing until an operator rebuilds it."""


class SchemaTooNew(StoreDamaged):
    """The store was written by a newer agent."""


class StoreFull(StoreError):
    """The file system of the store is full: nothing can be recorded, so nothing is done."""


REBUILD_HINT = ("the agent acts on nothing until it is rebuilt: stop the agent, then run "
                "`onprem-ray-agent run --rebuild-state` with the agent's options (machines ALIVE "
                "in Ray become active, the others spares; failure counts, backoffs and "
                "quarantines are forgotten; the damaged file is kept beside it)")
RUN_KINDS = frozenset({"add", "retire"})
HOST_OUTCOMES = frozenset({"ok", "failed", "unreachable"})
# SQLite's primary result codes that mean the file, not the query, is the problem.
_SQLITE_FULL, _SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_NOTADB = 13, 10, 11, 26
_FULL_BELOW_BYTES = 64 * 1024


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
        return cls._connect(path, _take_lock(lock_path(path)))

    @classmethod
    def replace(cls, path: str | os.PathLike[str]) -> tuple[StateStore, Path | None]:
        """An empty store at `path`, whatever was there moved aside first (`move_aside`), all
        under the lock: for `--rebuild-state`. Returns the store and where the old one went."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = _take_lock(lock_path(path))
        try:
            moved = move_aside(path)
        except OSError as err:
            os.close(lock_fd)
            raise _store_error(path, "cannot be moved aside", err) from err
        return cls._connect(path, lock_fd), moved

    @classmethod
    def _connect(cls, path: Path, lock_fd: int) -> StateStore:
        try:
            db = sqlite3.connect(path, isolation_level=None, timeout=10)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.execute("PRAGMA foreign_keys=ON")
                _migrate(db, path)
                _check_integrity(db, path)
            except BaseException:
                db.close()
                raise
        except (sqlite3.Error, OSError, UnicodeDecodeError) as err:  # text that is not UTF-8
            os.close(lock_fd)
            raise _store_error(path, "cannot be opened", err) from err
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
                if version != SCHEMA_VERSION:
                    raise SchemaTooNew(f"state store {path} has schema version {version}, this "
                                       f"agent reads {SCHEMA_VERSION}")
                _check_integrity(db, path)
            except BaseException:
                db.close()
                raise
        except (sqlite3.Error, OSError, UnicodeDecodeError) as err:  # text that is not UTF-8
            raise _store_error(path, "cannot be read", err) from err
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
        with self._file_errors("cannot be written"):
            self._db.execute("BEGIN IMMEDIATE")
            self._in_transaction = True
            try:
                yield self
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
                    self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
            finally:
                self._in_transaction = False

    @contextlib.contextmanager
    def _file_errors(self, what: str) -> Iterator[None]:
        """A full disk, an I/O error or a corrupt page becomes a StoreError that says what to
        do; other SQLite errors (a programming error, a read-only store) pass unchanged."""
        try:
            yield
        except UnicodeDecodeError as err:  # a damaged page holding text
            raise _store_error(self.path, what, err) from err
        except sqlite3.Error as err:
            if _primary_code(err) in (_SQLITE_FULL, _SQLITE_IOERR, _SQLITE_CORRUPT,
                                      _SQLITE_NOTADB):
                raise _store_error(self.path, what, err) from err
            raise

    # ------------------------------------------------------------ machines

    def machines(self) -> dict[str, Machine]:
        with self._file_errors("cannot be read"):
            rows = self._db.execute(_SELECT_MACHINES + " ORDER BY ip").fetchall()
        return {row[0]: _machine(row, self.path) for row in rows}

    def machine(self, ip: str) -> Machine | None:
        with self._file_errors("cannot be read"):
            row = self._db.execute(_SELECT_MACHINES + " WHERE ip = ?", (ip,)).fetchone()
        return None if row is None else _machine(row, self.path)

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
        with self._file_errors("cannot be read"):
            row = self._db.execute(_SELECT_RUNS + " WHERE request_id = ?",
                                   (request_id,)).fetchone()
        return None if row is None else _run(row, self.path)

    def runs(self, limit: int = 50, unfinished_only: bool = False) -> list[Run]:
        """The latest runs first."""
        where = " WHERE finished IS NULL" if unfinished_only else ""
        with self._file_errors("cannot be read"):
            rows = self._db.execute(_SELECT_RUNS + where + " ORDER BY started DESC, "
                                    "request_id LIMIT ?", (limit,)).fetchall()
        return [_run(row, self.path) for row in rows]

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
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        os.close(fd)
        raise
    return fd


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"state store {path} has schema version {version}, this agent knows up to "
            f"{SCHEMA_VERSION}: run the newer agent that wrote it, or rebuild it: "
            f"{REBUILD_HINT}")
    if version == SCHEMA_VERSION:
        return
    if version != 0 or _tables(db):
        raise StoreDamaged(
            f"state store {path} has schema version {version} and tables "
            f"{sorted(_tables(db)) or 'none'}: not a store any agent wrote; {REBUILD_HINT}")
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


def _tables(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _primary_code(err: sqlite3.Error) -> int:
    return (getattr(err, "sqlite_errorcode", 0) or 0) & 0xFF


def _store_error(path: Path, what: str, err: BaseException) -> StoreError:
    """The StoreError for a failure to open, read or write the store at `path`."""
    if isinstance(err, StoreError):
        return err
    if (isinstance(err, OSError) and err.errno == errno.ENOSPC) or (
            isinstance(err, sqlite3.Error) and _primary_code(err) == _SQLITE_FULL) or (
            _primary_code(err) == _SQLITE_IOERR and _nearly_full(path.parent)):
        return StoreFull(
            f"state store {path} {what}: no space left on its file system ({err}); nothing is "
            f"done while nothing can be recorded: free space under {path.parent} and the "
            "agent goes on (systemd restarts it), with nothing lost")
    if isinstance(err, OSError) or _primary_code(err) == _SQLITE_IOERR:
        return StoreError(f"state store {path} {what}: {err}; check the file system and the "
                          "permissions of its directory")
    return StoreDamaged(f"state store {path} {what}: {err}; {REBUILD_HINT}")


def _nearly_full(directory: Path) -> bool:
    """SQLite reports a full disk as a plain I/O error when its WAL index cannot grow."""
    try:
        stat = os.statvfs(directory)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < _FULL_BELOW_BYTES


def _check_integrity(db: sqlite3.Connection, path: Path) -> None:
    """Refuse a store whose pages or records cannot be trusted, before anything acts on it."""
    problems = [row[0] for row in db.execute("PRAGMA integrity_check(5)")]
    if problems != ["ok"]:
        raise StoreDamaged(f"state store {path} is damaged: {'; '.join(map(str, problems))}; "
                           f"{REBUILD_HINT}")
    missing = {"machines", "runs"} - _tables(db)
    if missing:
        raise StoreDamaged(f"state store {path} has no table {', '.join(sorted(missing))}; "
                           f"{REBUILD_HINT}")
    machines = db.execute(_SELECT_MACHINES).fetchall()
    runs = db.execute(_SELECT_RUNS).fetchall()
    for row in machines:
        _machine(row, path)
    busy: dict[str, str] = {}
    for row in runs:
        run = _run(row, path)
        if run.finished is not None:
            continue
        for ip in run.ips:
            if ip in busy:
                raise _damaged(path, f"runs {busy[ip]} and {run.request_id}",
                               f"{ip} is in both, and neither has finished")
            busy[ip] = run.request_id


def _damaged(path: Path, where: str, problem: str) -> StoreDamaged:
    return StoreDamaged(f"state store {path} is inconsistent: {where}: {problem}; "
                        f"{REBUILD_HINT}")


def _text(value: object, empty_ok: bool = True) -> bool:
    return isinstance(value, str) and (empty_ok or bool(value))


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _machine(row: tuple, path: Path) -> Machine:
    values = dict(zip(_MACHINE_COLUMNS, row, strict=True))
    where = f"machine {values['ip']!r}"
    checks = {"ip": _text(values["ip"], empty_ok=False),
              "node_type": _text(values["node_type"], empty_ok=False),
              "state": values["state"] in set(MachineState),
              "since": _finite(values["since"]),
              "next_attempt_at": _finite(values["next_attempt_at"]),
              "failures": _count(values["failures"]),
              "success_count": _count(values["success_count"]),
              "reason": _text(values["reason"]), "last_error": _text(values["last_error"]),
              "request_id": _text(values["request_id"])}
    for column, ok in checks.items():
        if not ok:
            raise _damaged(path, where, f"{column} is {values[column]!r}")
    values["state"] = MachineState(values["state"])
    values["since"] = float(values["since"])
    values["next_attempt_at"] = float(values["next_attempt_at"])
    return Machine(**values)


def _json(text: object, path: Path, where: str, column: str) -> object:
    if not isinstance(text, str):
        raise _damaged(path, where, f"{column} is {text!r}, not JSON text")
    try:
        return json.loads(text)
    except ValueError:
        raise _damaged(path, where, f"{column} is not JSON: {text[:80]!r}") from None


def _run(row: tuple, path: Path) -> Run:
    request_id, kind, ips, started, finished, outcome, hosts, tail = row
    where = f"run {request_id!r}"
    ips = _json(ips, path, where, "ips")
    hosts = _json(hosts, path, where, "hosts")
    checks = {
        "request_id": _text(request_id, empty_ok=False),
        "kind": kind in RUN_KINDS,
        "ips": isinstance(ips, list) and bool(ips) and all(_text(ip, False) for ip in ips)
        and len(set(ips)) == len(ips),
        "started": _finite(started),
        "finished": finished is None or _finite(finished),
        "outcome": (outcome is None) == (finished is None)
        and (outcome is None or _text(outcome, empty_ok=False)),
        "hosts": isinstance(hosts, dict) and all(_text(k, False) and v in HOST_OUTCOMES
                                                  for k, v in hosts.items()),
        "output_tail": _text(tail),
    }
    shown = {"ips": ips, "hosts": hosts, "request_id": request_id, "kind": kind,
             "started": started, "finished": finished, "outcome": outcome, "output_tail": tail}
    for column, ok in checks.items():
        if not ok:
            raise _damaged(path, where, f"{column} is {shown[column]!r}"[:300])
    return Run(request_id=request_id, kind=kind, ips=tuple(ips), started=float(started),
               finished=None if finished is None else float(finished), outcome=outcome,
               hosts=hosts, output_tail=tail)


def move_aside(path: Path, now: float | None = None) -> Path | None:
    """Move the store at `path` (with its WAL files) to `<path>.damaged-<UTC time>`, kept for
    inspection; None when there was no store. The caller holds the store's lock."""
    if not path.exists():
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(target.with_name(target.name + suffix))
    return target
