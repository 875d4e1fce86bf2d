"""The demand trace: what the simulator replays (docs/scaling.md describes the format).

JSON Lines. The first line is a header, `{"format": "onprem-ray-trace", "version": 1, ...}`;
every other line is one piece of work arriving, in time order:

    {"t": 12.0, "kind": "task", "resources": {"CPU": 1}, "count": 32, "duration_s": 300}
    {"t": 60.5, "kind": "placement_group", "strategy": "STRICT_SPREAD",
     "bundles": [{"CPU": 16, "GPU": 8}, {"CPU": 16, "GPU": 8}], "duration_s": 7200}

`t` is seconds from the start of the trace; `count` identical tasks or actors each run for
`duration_s` once placed; a placement group holds all its bundles for `duration_s`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

FORMAT = "onprem-ray-trace"
VERSION = 1
BUNDLE_KINDS = ("task", "actor")
PLACEMENT_GROUP = "placement_group"
STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")

Shape = tuple[tuple[str, float], ...]  # sorted (resource, amount > 0)


class TraceError(ValueError):
    """A trace that cannot be replayed; the message names the file, the line and the field."""


@dataclass(frozen=True, slots=True)
class Work:
    """Work arriving at `t`: `count` bundles of `shape` (task, actor), or one placement group
    of `bundles` with its `strategy`; each runs `duration_s` once placed."""

    t: float
    kind: str
    duration_s: float
    shape: Shape = ()
    count: int = 1
    bundles: tuple[Shape, ...] = ()
    strategy: str = ""

    @property
    def units(self) -> int:
        """What waits: each task or actor, or the whole placement group."""
        return 1 if self.kind == PLACEMENT_GROUP else self.count


@dataclass(frozen=True)
class Trace:
    header: Mapping[str, object]
    works: tuple[Work, ...]

    @property
    def duration_s(self) -> float:
        declared = self.header.get("duration_s")
        if isinstance(declared, int | float) and declared > 0:
            return float(declared)
        return max((w.t for w in self.works), default=0.0)


def shape_of(resources: Mapping[str, float]) -> Shape:
    return tuple(sorted((str(k), float(v)) for k, v in resources.items() if float(v) > 0))


def _number(value: object, where: str, name: str, minimum: float = 0.0,
            strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TraceError(f"{where}: {name} must be a number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        op = ">" if strict else ">="
        raise TraceError(f"{where}: {name} must be {op} {minimum:g}, got {value!r}")
    return float(value)


def _resources(value: object, where: str, name: str) -> Shape:
    if not isinstance(value, dict) or not value:
        raise TraceError(f"{where}: {name} must be a non-empty object of resource amounts, "
                         f"got {value!r}")
    for key, amount in value.items():
        _number(amount, where, f"{name}.{key}")
    shape = shape_of(value)
    if not shape:
        raise TraceError(f"{where}: {name} asks for nothing (every amount is 0)")
    return shape


def work_from_dict(record: object, where: str) -> Work:
    if not isinstance(record, dict):
        raise TraceError(f"{where}: a record must be a JSON object, got {record!r}")
    t = _number(record.get("t"), where, "t")
    kind = record.get("kind")
    duration = _number(record.get("duration_s"), where, "duration_s", strict=True)
    if kind in BUNDLE_KINDS:
        count = record.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise TraceError(f"{where}: count must be an integer >= 1, got {count!r}")
        return Work(t, kind, duration, _resources(record.get("resources"), where, "resources"),
                    count)
    if kind == PLACEMENT_GROUP:
        strategy = record.get("strategy", "PACK")
        if strategy not in STRATEGIES:
            raise TraceError(f"{where}: strategy must be one of {', '.join(STRATEGIES)}, "
                             f"got {strategy!r}")
        bundles = record.get("bundles")
        if not isinstance(bundles, list) or not bundles:
            raise TraceError(f"{where}: bundles must be a non-empty list, got {bundles!r}")
        return Work(t, kind, duration, bundles=tuple(
            _resources(b, where, f"bundles[{i}]") for i, b in enumerate(bundles)),
            strategy=strategy)
    raise TraceError(f"{where}: kind must be one of task, actor, placement_group, "
                     f"got {kind!r}")


def work_to_dict(work: Work) -> dict[str, object]:
    record: dict[str, object] = {"t": round(work.t, 3), "kind": work.kind}
    if work.kind == PLACEMENT_GROUP:
        record["strategy"] = work.strategy
        record["bundles"] = [dict(b) for b in work.bundles]
    else:
        record["resources"] = dict(work.shape)
        record["count"] = work.count
    record["duration_s"] = round(work.duration_s, 3)
    return record


def read_trace(path: str | Path) -> Trace:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise TraceError(f"{path}: cannot be read: {err.strerror or err}") from None
    works: list[Work] = []
    header: dict[str, object] | None = None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except ValueError as err:
            raise TraceError(f"{where}: not JSON: {err}") from None
        if header is None:
            if not isinstance(record, dict) or record.get("format") != FORMAT:
                raise TraceError(f"{where}: the first line must be the header "
                                 f'{{"format": "{FORMAT}", "version": {VERSION}}}')
            if record.get("version") != VERSION:
                raise TraceError(f"{where}: trace version {record.get('version')!r}; this "
                                 f"simulator reads version {VERSION}")
            header = record
            continue
        work = work_from_dict(record, where)
        if works and work.t < works[-1].t:
            raise TraceError(f"{where}: t {work.t:g} is before the previous record's "
                             f"{works[-1].t:g}: records must be in time order")
        works.append(work)
    if header is None:
        raise TraceError(f"{path}: empty; a trace starts with its header line")
    return Trace(header, tuple(works))


def write_trace(path: str | Path, works: Iterable[Work], **header: object) -> None:
    with Path(path).open("w", encoding="utf-8") as out:
        out.write(json.dumps({"format": FORMAT, "version": VERSION, **header}) + "\n")
        for work in works:
            out.write(json.dumps(work_to_dict(work)) + "\n")
