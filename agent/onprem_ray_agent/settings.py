"""The agent's settings file: its tuning, which a cluster file does not carry.

The head role writes it from its variables (roles/head defaults: head_agent_interval,
head_agent_provision_timeout ...). Every key is optional; a missing one keeps the default of
`model.Config` (or of the loop's interval). Unknown keys and values of the wrong type are
refused by name; the ranges of the decision's settings are `model.Config`'s own checks, so that
they are validated in one place. SIGHUP reads the file again, with the cluster file.

    interval_s: 5.0                  # seconds between two iterations of the loop
    max_concurrent_launches: 10      # machines joining at once, all node types together
    provision_timeout_s: 600.0       # an add not ALIVE in Ray by then has failed; an active
                                     # machine Ray does not list for longer is lost
    backoff_base_s: 30.0             # a failed machine waits base, 2 x base ... up to max
    backoff_max_s: 900.0
    quarantine_after_failures: 5     # consecutive failures; 0: never quarantined
    drain_deadline_s: 300.0          # a drain not done by then fails (the machine stays active)
    cancel_join_after_s: 30.0        # an add no demand needs for this long is canceled (> 0)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from onprem_ray_agent.model import Config

DEFAULT_INTERVAL_S = 5.0
# The decision's settings (fields of model.Config) a settings file may set, with their type.
DECISION_KEYS: Mapping[str, type] = {
    "max_concurrent_launches": int,
    "provision_timeout_s": float,
    "backoff_base_s": float,
    "backoff_max_s": float,
    "quarantine_after_failures": int,
    "drain_deadline_s": float,
    "cancel_join_after_s": float,
}
KEYS: Mapping[str, type] = {"interval_s": float, **DECISION_KEYS}


class SettingsError(ValueError):
    """The settings file is refused; the message names the file, the key and the value."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings file as the agent uses it."""

    interval_s: float = DEFAULT_INTERVAL_S
    # Keyword arguments of model.Config (only those the file sets).
    decision: Mapping[str, float | int] = dataclasses.field(default_factory=dict)


def _typed(path: Path, key: str, value: Any) -> float | int:
    kind = KEYS[key]
    # YAML's true/false are ints to Python: refused, as are strings and lists.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingsError(f"{path}: {key} must be a number, got {value!r}")
    if kind is int:
        if value != int(value):
            raise SettingsError(f"{path}: {key} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def parse_settings(data: Any, path: Path) -> Settings:
    """Settings of a parsed settings file (`path` only names it in errors)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    for key in data:
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SettingsError(
                f"{path}: unknown setting {key!r}{hint}; known: {', '.join(KEYS)}")
    values = {key: _typed(path, key, value) for key, value in data.items()}
    interval = values.pop("interval_s", DEFAULT_INTERVAL_S)
    if not (interval > 0 and math.isfinite(interval)):
        raise SettingsError(f"{path}: interval_s must be a finite number > 0, got {interval!r}")
    try:  # the ranges: model.Config's own validation
        Config(head_ip="settings", node_types=(), **values)
    except ValueError as err:
        raise SettingsError(f"{path}: {err}") from None
    return Settings(interval_s=interval, decision=values)


def load_settings(path: str | os.PathLike[str]) -> Settings:
    """Read and validate the settings file at `path`; SettingsError says what is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SettingsError(f"settings file {path}: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SettingsError(f"{path}: not YAML: {err}") from None
    return parse_settings(data, path)


def main(argv: list[str]) -> int:
    """`python -m onprem_ray_agent.settings FILE`: check a settings file (the head role validates
    the file it writes with it)."""
    if len(argv) != 2:
        print("usage: python -m onprem_ray_agent.settings FILE", file=sys.stderr)
        return 2
    try:
        load_settings(argv[1])
    except SettingsError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
