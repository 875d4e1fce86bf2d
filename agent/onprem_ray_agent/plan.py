"""`onprem-ray-agent plan SNAPSHOT.json`: the decision for a recorded situation, without a
cluster — the answer to "why didn't it scale?". The format is agent/docs/plan-format.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from onprem_ray_agent.codec import FormatError, PlanInput, decision_to_dict, plan_input_from_dict
from onprem_ray_agent.model import Decision
from onprem_ray_agent.policy import decide


def load(path: str | Path) -> PlanInput:
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise FormatError(f"{path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise FormatError(f"{path}: not UTF-8 text: {err.reason} at byte {err.start}") from None
    except json.JSONDecodeError as err:
        raise FormatError(f"{path}: not JSON: {err}") from None
    try:
        return plan_input_from_dict(raw)
    except FormatError as err:
        raise FormatError(f"{path}: {err}") from None


def plan(snapshot: PlanInput) -> Decision:
    return decide(snapshot.config, snapshot.machines, snapshot.demand, snapshot.now,
                  unneeded_since=snapshot.unneeded_since, absent_since=snapshot.absent_since)


def plan_file(path: str | Path) -> dict[str, Any]:
    """The decision for the snapshot in `path`, as the JSON-ready dict `plan` prints."""
    return decision_to_dict(plan(load(path)))
