"""Fuzzing the state store's loader (`StateStore.open`, then `machines()` and `runs()`): any
file gets a store or a StoreError (the documented errors: StoreDamaged, StoreFull,
StoreLocked, SchemaTooNew), never a crash, and a store with a record that breaks the rules is
never opened.

Two generators, each reaching both sides (floors asserted, counts printed): records written
straight into the tables (all valid, or one field replaced by anything), judged by an oracle
written here from the rules in agent/docs/agent.md, on the values SQLite actually stored; and
a healthy store file with bytes overwritten or cut off.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import event, given, settings
from hypothesis import strategies as st

from onprem_ray_agent.model import Machine, MachineState
from onprem_ray_agent.store import StateStore, StoreDamaged, StoreError

SETTINGS = settings()  # the profile of the root conftest.py
FLOOR = 0.2
IPS = ["10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4"]
STATES = ["spare", "joining", "active", "draining", "retiring", "failed", "quarantined"]

anything = st.one_of(st.none(), st.booleans(), st.integers(-5, 2**62),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                     st.binary(max_size=4), st.sampled_from(["12.5", "1e999", "-1", "[]", "{}",
                                                             '["10.0.1.1"]', "running", "ok"]))
times = st.floats(0, 2e9, allow_nan=False)
counts = st.integers(0, 20)


@st.composite
def machine_rows(draw):
    return {"ip": draw(st.sampled_from(IPS)), "node_type": draw(st.sampled_from(["cpu", "gpu"])),
            "state": draw(st.sampled_from(STATES)), "since": draw(times),
            "reason": draw(st.text(max_size=5)), "last_error": draw(st.text(max_size=5)),
            "failures": draw(counts), "next_attempt_at": draw(times),
            "request_id": draw(st.sampled_from(["", "add-1", "retire-2"])),
            "success_count": draw(counts)}


@st.composite
def run_rows(draw, index):
    finished = draw(st.one_of(st.none(), times))
    ips = draw(st.lists(st.sampled_from(IPS), min_size=1, max_size=2, unique=True))
    return {"request_id": f"run-{index}", "kind": draw(st.sampled_from(["add", "retire"])),
            "ips": json.dumps(ips), "started": draw(times), "finished": finished,
            "outcome": None if finished is None else draw(st.sampled_from(
                ["successful", "failed", "canceled", "interrupted"])),
            "hosts": json.dumps({ip: draw(st.sampled_from(["ok", "failed", "unreachable"]))
                                 for ip in ips if finished is not None}),
            "output_tail": draw(st.text(max_size=5))}


@st.composite
def tables(draw):
    """Valid records; half of the time one field of one record replaced by anything."""
    machines = list({row["ip"]: row for row in draw(st.lists(machine_rows(), max_size=4))
                     }.values())
    runs = [draw(run_rows(i)) for i in range(draw(st.integers(0, 3)))]
    rows = machines + runs
    if rows and draw(st.booleans()):
        row = draw(st.sampled_from(rows))
        row[draw(st.sampled_from(sorted(row)))] = draw(anything)
    return machines, runs


# ---------------------------------------------------------------- the oracle


def _finite(value) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _text(value, empty_ok=True) -> bool:
    return type(value) is str and (empty_ok or value != "")


def _count(value) -> bool:
    return type(value) is int and value >= 0


def machine_ok(row: dict) -> bool:
    return (_text(row["ip"], False) and _text(row["node_type"], False)
            and row["state"] in STATES and _finite(row["since"])
            and _finite(row["next_attempt_at"]) and _count(row["failures"])
            and _count(row["success_count"]) and _text(row["reason"])
            and _text(row["last_error"]) and _text(row["request_id"]))


def run_ok(row: dict) -> bool:
    try:
        ips = json.loads(row["ips"]) if type(row["ips"]) is str else None
        hosts = json.loads(row["hosts"]) if type(row["hosts"]) is str else None
    except ValueError:
        return False
    return (_text(row["request_id"], False) and row["kind"] in ("add", "retire")
            and type(ips) is list and len(ips) > 0 and all(_text(ip, False) for ip in ips)
            and len(set(ips)) == len(ips) and _finite(row["started"])
            and (row["finished"] is None or _finite(row["finished"]))
            and (row["outcome"] is None) == (row["finished"] is None)
            and (row["outcome"] is None or _text(row["outcome"], False))
            and type(hosts) is dict
            and all(v in ("ok", "failed", "unreachable") for v in hosts.values())
            and _text(row["output_tail"]))


def consistent(machines: list[dict], runs: list[dict]) -> bool:
    if not all(map(machine_ok, machines)) or not all(map(run_ok, runs)):
        return False
    busy = [ip for run in runs if run["finished"] is None for ip in json.loads(run["ips"])]
    return len(busy) == len(set(busy))


def stored(path: Path) -> tuple[list[dict], list[dict]]:
    """The rows as SQLite stored them (after its type affinity), read with plain sqlite3."""
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return ([dict(r) for r in db.execute("SELECT * FROM machines")],
                [dict(r) for r in db.execute("SELECT * FROM runs")])
    finally:
        db.close()


def write(path: Path, machines: list[dict], runs: list[dict]) -> None:
    with StateStore.open(path):
        pass  # the schema
    db = sqlite3.connect(path)
    for table, rows in (("machines", machines), ("runs", runs)):
        for row in rows:
            columns = ", ".join(row)
            marks = ", ".join("?" for _ in row)
            # refused by the schema itself (NOT NULL, the primary key): not written
            with contextlib.suppress(sqlite3.IntegrityError, OverflowError):
                db.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})",  # noqa: S608
                           [v if not isinstance(v, bool) else int(v) for v in row.values()])
    db.commit()
    db.close()


RECORDS: Counter = Counter()


@SETTINGS
@given(tables())
def loaded_records(data):
    machines, runs = data
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "state.db"
        write(path, machines, runs)
        expected = consistent(*stored(path))
        try:
            store = StateStore.open(path)
        except StoreDamaged as err:
            assert "rebuild" in str(err)
            assert not expected, f"refused a consistent store: {err}"
            event("refused")
            RECORDS["refused"] += 1
            return
        try:
            assert expected, "opened a store that breaks its rules"
            records = store.machines()
            assert all(isinstance(m, Machine) and isinstance(m.state, MachineState)
                       for m in records.values())
            assert len(store.runs(limit=100)) == len(stored(path)[1])
        finally:
            store.close()
        event("accepted")
        RECORDS["accepted"] += 1


def test_records_breaking_the_rules_are_refused_and_the_others_load():
    RECORDS.clear()
    loaded_records()
    total = sum(RECORDS.values())
    print(f"\nstate store records: {total} inputs, {dict(RECORDS)}")
    for side in ("accepted", "refused"):
        assert RECORDS[side] >= FLOOR * total, (side, dict(RECORDS))


# ---------------------------------------------------------------- damaged files


def healthy(path: Path) -> None:
    with StateStore.open(path) as store:
        for i, ip in enumerate(IPS):
            store.put(Machine(ip, "cpu", MachineState(STATES[i]), 10.0 * i, reason="r" * 50))
        for n in range(30):
            store.start_run(f"run-{n}", "add", [IPS[n % 4]], float(n))
            store.finish_run(f"run-{n}", n + 1.0, "failed", {IPS[n % 4]: "failed"}, "x" * 300)


with tempfile.TemporaryDirectory() as _directory:
    _path = Path(_directory) / "state.db"
    healthy(_path)
    HEALTHY = _path.read_bytes()

edits = st.lists(st.tuples(st.integers(0, len(HEALTHY) - 1), st.binary(min_size=1, max_size=16)),
                 max_size=4)
FILES: Counter = Counter()


@SETTINGS
@given(edits, st.one_of(st.none(), st.integers(0, len(HEALTHY))))
def damaged_files(overwrites, cut):
    data = bytearray(HEALTHY)
    for offset, chunk in overwrites:
        data[offset:offset + len(chunk)] = chunk
    if cut is not None:
        data = data[:cut]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "state.db"
        path.write_bytes(bytes(data))
        try:
            store = StateStore.open(path)
        except StoreError as err:
            assert str(path) in str(err)
            event("refused")
            FILES["refused"] += 1
            return
        try:  # opened: every record reads back as a valid one
            records = store.machines()
            assert all(machine_ok({**vars(m), "state": m.state.value})
                       for m in records.values())
            store.runs(limit=1000)
        finally:
            store.close()
        event("accepted")
        FILES["accepted"] += 1


def test_a_damaged_file_is_refused_or_reads_back_valid_records():
    FILES.clear()
    damaged_files()
    total = sum(FILES.values())
    print(f"\nstate store files: {total} inputs, {dict(FILES)}")
    for side in ("accepted", "refused"):
        assert FILES[side] >= 0.1 * total, (side, dict(FILES))
