"""The agent's demand history, and its export as a trace the scaling simulator replays
(`bench/simulate.py --trace`; docs/scaling.md describes both formats).

`HistoryRecorder` appends to `<state dir>/history.jsonl` what each iteration saw of Ray, only
when it changed: the pending demand (bundles by shape with counts, placement groups) and each
worker node's resources in use. The file starts with a header carrying its schema version;
past `max_bytes` it becomes `history.jsonl.1` (replacing the older one) and a new file starts
with every node's usage, so the history takes at most twice `max_bytes` on disk.

`export` turns that into work: each node's usage between two changes is a task of that size
for that long; a task whose start removed demand that had been pending is dated back to when
that demand first showed (its wait). Demand still pending at the end is left out. Work on the
head is left out: a replay places work on the pool's machines only.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from onprem_ray_agent.model import DemandSnapshot, RayNodeState

HISTORY_FILE = "history.jsonl"
HISTORY_FORMAT = "onprem-ray-history"
HISTORY_VERSION = 1
TRACE_FORMAT = "onprem-ray-trace"
TRACE_VERSION = 1
DEFAULT_MAX_BYTES = 32 * 1024 * 1024

Shape = tuple[tuple[str, float], ...]


class HistoryError(ValueError):
    """The history cannot be read; the message names the file and the line."""


def _shape(resources: Mapping[str, float]) -> Shape:
    # Ray's amounts are fixed-point with 4 decimals: rounding drops float noise only.
    return tuple(sorted((name, round(float(amount), 4)) for name, amount in resources.items()
                        if round(float(amount), 4) > 0))


def _pending(demand: DemandSnapshot) -> dict[Shape, int]:
    """Bundles waiting, by shape: tasks and actors, and every placement group's bundles."""
    counts: dict[Shape, int] = defaultdict(int)
    for bundle in demand.pending:
        shape = _shape(bundle.resources)
        if shape:
            counts[shape] += bundle.count
    for group in demand.placement_groups:
        for bundle in group.bundles:
            shape = _shape(bundle)
            if shape:
                counts[shape] += 1
    return dict(counts)


def _used(demand: DemandSnapshot, head_ip: str) -> dict[str, Shape]:
    used = {}
    for node in demand.nodes:
        if node.state != RayNodeState.ALIVE or node.ip == head_ip:
            continue
        used[node.ip] = _shape({name: total - node.available.get(name, total)
                                for name, total in node.total.items()})
    return used


class HistoryRecorder:
    """Appends what changed since the last iteration; `record` is cheap when nothing did."""

    def __init__(self, state_dir: Path, head_ip: str,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = Path(state_dir) / HISTORY_FILE
        self.head_ip = head_ip
        self.max_bytes = max_bytes
        self._pending: dict[Shape, int] | None = None  # None: next line is a full one
        self._used: dict[str, Shape] = {}

    def record(self, now: float, demand: DemandSnapshot) -> None:
        pending = _pending(demand)
        used = _used(demand, self.head_ip)
        if self.path.exists() and self.path.stat().st_size > self.max_bytes:
            os.replace(self.path, self.path.with_name(HISTORY_FILE + ".1"))
        full = self._pending is None or not self.path.exists()
        if full:
            changed, gone = used, []
        else:
            changed = {ip: shape for ip, shape in used.items() if self._used.get(ip) != shape}
            gone = sorted(ip for ip in self._used if ip not in used)
            if not changed and not gone and pending == self._pending:
                return
        line: dict[str, object] = {
            "t": round(now, 3),
            "pending": [[dict(shape), count] for shape, count in sorted(pending.items())],
            "used": {ip: dict(shape) for ip, shape in sorted(changed.items())}}
        if gone:
            line["gone"] = gone
        if full:
            line["full"] = True  # every node's usage: reading may start here
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        with self.path.open("a", encoding="utf-8") as out:
            if new:
                out.write(json.dumps({"format": HISTORY_FORMAT, "version": HISTORY_VERSION,
                                      "started": round(now, 3)}) + "\n")
            out.write(json.dumps(line, separators=(",", ":")) + "\n")
        self._pending, self._used = pending, used


# ---------------------------------------------------------------- reading and export


def _lines(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise HistoryError(f"{path}: cannot be read: {err.strerror or err}") from None
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(raw)
        except ValueError:
            if number == len(text.splitlines()):
                return  # a line cut short by a crash while it was written
            raise HistoryError(f"{where}: not JSON") from None
        if number == 1:
            if not isinstance(record, dict) or record.get("format") != HISTORY_FORMAT:
                raise HistoryError(f"{where}: not an onprem-ray-agent history (no header)")
            if record.get("version") != HISTORY_VERSION:
                raise HistoryError(f"{where}: history version {record.get('version')!r}; "
                                   f"this agent reads version {HISTORY_VERSION}")
            continue
        yield where, record


def samples(state_dir: Path) -> Iterator[tuple[str, dict]]:
    """The recorded lines, oldest first, over the rotated file and the current one."""
    current = Path(state_dir) / HISTORY_FILE
    older = current.with_name(HISTORY_FILE + ".1")
    if not current.exists() and not older.exists():
        raise HistoryError(f"{current} does not exist: the agent has recorded no history "
                           "in this state directory")
    for path in (older, current):
        if path.exists():
            yield from _lines(path)


@dataclass(frozen=True)
class ExportSummary:
    records: int
    tasks: int
    waited: int
    left_pending: int
    start: float
    duration_s: float


def _fits(shape: Shape, used: Shape) -> bool:
    have = dict(used)
    return all(have.get(name, 0.0) + 1e-9 >= amount for name, amount in shape)


def export(state_dir: Path, out: Path) -> ExportSummary:
    """Write the history of `state_dir` as a trace to `out`."""
    used: dict[str, tuple[float, float, Shape]] = {}  # ip -> (arrival, since, usage)
    pending: dict[Shape, int] = {}
    waiting: dict[Shape, deque[float]] = defaultdict(deque)  # first seen, per bundle
    tasks: dict[tuple[float, Shape, float], int] = defaultdict(int)
    start = end = None
    waited = 0

    def close(ip: str, t: float) -> None:
        arrival, since, shape = used.pop(ip)
        if shape and t > since:
            tasks[(arrival, shape, t - since)] += 1

    for where, line in samples(state_dir):
        try:
            t = float(line["t"])
            now_pending = {_shape(r): int(c) for r, c in line["pending"]}
            changed = {ip: _shape(r) for ip, r in line["used"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise HistoryError(f"{where}: malformed sample ({err!r})") from None
        start = t if start is None else start
        end = t
        if line.get("full"):
            for ip in [ip for ip in used if ip not in changed]:
                close(ip, t)
        for ip in line.get("gone", ()):
            if ip in used:
                close(ip, t)
        # demand that left the queue since the last sample started somewhere now
        started: list[tuple[float, Shape]] = []  # (first seen, shape)
        for shape, count in pending.items():
            for _ in range(max(0, count - now_pending.get(shape, 0))):
                if waiting[shape]:
                    started.append((waiting[shape].popleft(), shape))
        for shape, count in now_pending.items():
            for _ in range(max(0, count - pending.get(shape, 0))):
                waiting[shape].append(t)
        pending = now_pending
        started.sort()
        for ip, shape in sorted(changed.items()):
            arrival = t
            match = next((i for i, (_, s) in enumerate(started) if _fits(s, shape)), None)
            if match is not None:
                arrival = started.pop(match)[0]
                waited += 1
            if ip in used:
                close(ip, t)
            used[ip] = (arrival, t, shape)
    if start is None:
        raise HistoryError(f"{Path(state_dir) / HISTORY_FILE}: no samples recorded yet")
    for ip in list(used):
        close(ip, end)
    left = sum(len(q) for q in waiting.values())
    records = sorted(tasks.items())
    out = Path(out)
    with out.open("w", encoding="utf-8") as stream:
        stream.write(json.dumps({"format": TRACE_FORMAT, "version": TRACE_VERSION,
                                 "duration_s": round(end - start, 3), "start_time": start,
                                 "source": "onprem-ray-agent history --export"}) + "\n")
        for (arrival, shape, duration), count in records:
            stream.write(json.dumps({"t": round(arrival - start, 3), "kind": "task",
                                     "resources": dict(shape), "count": count,
                                     "duration_s": round(duration, 3)}) + "\n")
    return ExportSummary(records=len(records), tasks=sum(tasks.values()), waited=waited,
                         left_pending=left, start=start, duration_s=end - start)
