"""The model to and from plain JSON-ready dicts, strictly: an unknown key or a wrong type is
refused by its path (e.g. `config.node_types.gpu.resorces`), never ignored.

The format is documented in agent/docs/plan-format.md. Version 2 adds labels (node types' and
nodes' `labels`, `label_selector` and `fallback_label_selectors` of demand, placement groups'
`bundle_label_selectors`), partly placed placement groups (`placed_on`) and node types'
`idle_timeout_s`; version 1 files are still read (without those keys).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from onprem_ray_agent.model import (
    Action,
    BundleDemand,
    Config,
    Decision,
    DemandSnapshot,
    Infeasible,
    LabelConstraint,
    LabelOperator,
    LabelSelector,
    Machine,
    MachineState,
    NodeType,
    PlacementGroupDemand,
    PlacementStrategy,
    RayNode,
    RayNodeState,
    Selectors,
)

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
# Keys that version 1 does not have, where they may appear.
_V2_NODE_TYPE = ("labels", "idle_timeout_s")
_V2_BUNDLES = ("label_selector", "fallback_label_selectors")
_V2_GROUP = ("bundle_label_selectors", "placed_on")
_V2_NODE = ("labels",)


class FormatError(ValueError):
    """The input does not follow the documented format; the message names the place."""


# ---------------------------------------------------------------- checking helpers


def _object(value: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...]
            ) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise FormatError(f"{where}: expected an object, got {type(value).__name__}")
    unknown = [key for key in value if key not in required and key not in optional]
    if unknown:
        known = ", ".join((*required, *optional))
        raise FormatError(f"{where}: unknown key {unknown[0]!r} (known: {known})")
    missing = [key for key in required if key not in value]
    if missing:
        raise FormatError(f"{where}: missing key {missing[0]!r}")
    return dict(value)


def _number(value: Any, where: str, minimum: float | None = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FormatError(f"{where}: expected a number, got {value!r}")
    if minimum is not None and value < minimum:
        raise FormatError(f"{where}: must be >= {minimum:g}, got {value!r}")
    return float(value)


def _integer(value: Any, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatError(f"{where}: expected an integer, got {value!r}")
    if value < minimum:
        raise FormatError(f"{where}: must be >= {minimum}, got {value!r}")
    return value


def _string(value: Any, where: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value):
        raise FormatError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise FormatError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _resources(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise FormatError(f"{where}: expected an object of resource amounts")
    return {_string(name, f"{where} key"): _number(amount, f"{where}.{name}")
            for name, amount in value.items()}


def _labels(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise FormatError(f"{where}: expected an object of label names to values")
    return {_string(key, f"{where} key"): _string(text, f"{where}.{key}", allow_empty=True)
            for key, text in value.items()}


def _selector(value: Any, where: str) -> LabelSelector:
    """Ray's syntax: {"key": "v"} (in), "!v" (not in), "in(a,b)", "!in(a,b)"."""
    if not isinstance(value, Mapping):
        raise FormatError(f"{where}: expected an object of label names to selectors")
    constraints = []
    for key, text in value.items():
        at = f"{where}.{key}"
        text = _string(text, at).strip()
        operator = LabelOperator.IN
        if text.startswith("!"):
            operator, text = LabelOperator.NOT_IN, text[1:].strip()
        if text.startswith("in(") and text.endswith(")"):
            values = tuple(v.strip() for v in text[3:-1].split(","))
        else:
            values = (text,)
        if not all(values):
            raise FormatError(f"{at}: {value[key]!r} is not a label selector (\"v\", \"!v\", "
                              "\"in(a,b)\" or \"!in(a,b)\")")
        constraints.append(LabelConstraint(_string(key, f"{where} key"), operator,
                                           tuple(sorted(values))))
    return LabelSelector(tuple(constraints))


def _selectors(data: Mapping[str, Any], where: str) -> Selectors:
    """`label_selector`, then `fallback_label_selectors`, as Ray's list of alternatives."""
    selectors = []
    if data.get("label_selector"):
        selectors.append(_selector(data["label_selector"], f"{where}.label_selector"))
    fallbacks = _list(data.get("fallback_label_selectors", []),
                      f"{where}.fallback_label_selectors")
    if fallbacks and not selectors:
        raise FormatError(f"{where}.fallback_label_selectors: needs a label_selector first")
    selectors += [_selector(item, f"{where}.fallback_label_selectors[{i}]")
                  for i, item in enumerate(fallbacks)]
    return tuple(selectors)


def selector_to_dict(selector: LabelSelector) -> dict[str, str]:
    out = {}
    for constraint in selector.constraints:
        negate = "!" if constraint.operator == LabelOperator.NOT_IN else ""
        values = constraint.values
        out[constraint.key] = (f"{negate}{values[0]}" if len(values) == 1
                               else f"{negate}in({','.join(values)})")
    return out


def selectors_to_dict(selectors: Selectors) -> dict[str, Any]:
    if not selectors:
        return {}
    out: dict[str, Any] = {"label_selector": selector_to_dict(selectors[0])}
    if len(selectors) > 1:
        out["fallback_label_selectors"] = [selector_to_dict(s) for s in selectors[1:]]
    return out


def _v2(keys: tuple[str, ...], version: int) -> tuple[str, ...]:
    return keys if version >= 2 else ()


def _enum(kind: Callable[[str], Any], value: Any, where: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(member.value for member in kind)  # type: ignore[attr-defined]
        raise FormatError(f"{where}: {value!r} is not one of {choices}") from None


def _build(kind: Callable[..., Any], where: str, **values: Any) -> Any:
    try:
        return kind(**values)
    except ValueError as err:
        raise FormatError(f"{where}: {err}") from None


# ---------------------------------------------------------------- reading

_CONFIG_NUMBERS = ("upscaling_speed", "idle_timeout_minutes", "provision_timeout_s",
                   "backoff_base_s", "backoff_max_s", "drain_deadline_s", "cancel_join_after_s")
_CONFIG_INTEGERS = ("min_workers", "max_concurrent_launches", "quarantine_after_failures")


def config_from_dict(value: Any, where: str = "config", version: int = FORMAT_VERSION
                     ) -> Config:
    data = _object(value, where, ("head_ip", "node_types"),
                   ("head_node_type", "max_workers", *_CONFIG_NUMBERS, *_CONFIG_INTEGERS))
    types = data["node_types"]
    if not isinstance(types, Mapping):
        raise FormatError(f"{where}.node_types: expected an object of node types by name")
    node_types = tuple(_node_type(name, spec, f"{where}.node_types.{name}", version)
                       for name, spec in types.items())
    values: dict[str, Any] = {
        "head_ip": _string(data["head_ip"], f"{where}.head_ip"),
        "node_types": node_types,
    }
    if data.get("head_node_type") is not None:
        values["head_node_type"] = _string(data["head_node_type"], f"{where}.head_node_type")
    if data.get("max_workers") is not None:
        values["max_workers"] = _integer(data["max_workers"], f"{where}.max_workers")
    for name in _CONFIG_NUMBERS:
        if name in data:
            values[name] = _number(data[name], f"{where}.{name}")
    for name in _CONFIG_INTEGERS:
        if name in data:
            values[name] = _integer(data[name], f"{where}.{name}")
    return _build(Config, where, **values)


def _node_type(name: Any, value: Any, where: str, version: int) -> NodeType:
    data = _object(value, where, ("ips",), ("resources", "min_workers", "max_workers",
                                            *_v2(_V2_NODE_TYPE, version)))
    ips = tuple(_string(ip, f"{where}.ips[{i}]")
                for i, ip in enumerate(_list(data["ips"], f"{where}.ips")))
    return _build(
        NodeType, where,
        name=_string(name, where),
        ips=ips,
        resources=_resources(data.get("resources", {}), f"{where}.resources"),
        min_workers=_integer(data.get("min_workers", 0), f"{where}.min_workers"),
        max_workers=(None if data.get("max_workers") is None
                     else _integer(data["max_workers"], f"{where}.max_workers")),
        labels=_labels(data.get("labels", {}), f"{where}.labels"),
        idle_timeout_s=(None if data.get("idle_timeout_s") is None
                        else _number(data["idle_timeout_s"], f"{where}.idle_timeout_s")),
    )


def machine_from_dict(value: Any, where: str) -> Machine:
    data = _object(value, where, ("ip", "node_type"),
                   ("state", "since", "reason", "last_error", "failures", "next_attempt_at",
                    "request_id", "success_count"))
    return Machine(
        ip=_string(data["ip"], f"{where}.ip"),
        node_type=_string(data["node_type"], f"{where}.node_type"),
        state=_enum(MachineState, data.get("state", "spare"), f"{where}.state"),
        since=_number(data.get("since", 0.0), f"{where}.since"),
        reason=_string(data.get("reason", ""), f"{where}.reason", allow_empty=True),
        last_error=_string(data.get("last_error", ""), f"{where}.last_error",
                           allow_empty=True),
        failures=_integer(data.get("failures", 0), f"{where}.failures"),
        next_attempt_at=_number(data.get("next_attempt_at", 0.0), f"{where}.next_attempt_at"),
        request_id=_string(data.get("request_id", ""), f"{where}.request_id",
                           allow_empty=True),
        success_count=_integer(data.get("success_count", 0), f"{where}.success_count"),
    )


def _bundles(value: Any, where: str, version: int) -> tuple[BundleDemand, ...]:
    out = []
    for i, item in enumerate(_list(value, where)):
        at = f"{where}[{i}]"
        data = _object(item, at, ("resources",), ("count", *_v2(_V2_BUNDLES, version)))
        out.append(BundleDemand(
            resources=_resources(data["resources"], f"{at}.resources"),
            count=_integer(data.get("count", 1), f"{at}.count"),
            label_selectors=_selectors(data, at)))
    return tuple(out)


def _placement_group(item: Any, at: str, version: int) -> PlacementGroupDemand:
    group = _object(item, at, ("id", "strategy", "bundles"), _v2(_V2_GROUP, version))
    bundles = tuple(_resources(bundle, f"{at}.bundles[{j}]")
                    for j, bundle in enumerate(_list(group["bundles"], f"{at}.bundles")))
    selectors = _list(group.get("bundle_label_selectors", []), f"{at}.bundle_label_selectors")
    if selectors and len(selectors) != len(bundles):
        raise FormatError(f"{at}.bundle_label_selectors: {len(selectors)} selectors for "
                          f"{len(bundles)} bundles (one per bundle, {{}} for none)")
    by_bundle = tuple(
        (_selector(item, f"{at}.bundle_label_selectors[{j}]"),) if item else ()
        for j, item in enumerate(selectors))
    return PlacementGroupDemand(
        id=_string(group["id"], f"{at}.id"),
        strategy=_enum(PlacementStrategy, group["strategy"], f"{at}.strategy"),
        bundles=bundles,
        bundle_selectors=by_bundle if any(by_bundle) else (),
        placed_on=tuple(_string(ip, f"{at}.placed_on[{j}]")
                        for j, ip in enumerate(_list(group.get("placed_on", []),
                                                     f"{at}.placed_on"))),
    )


def demand_from_dict(value: Any, where: str = "demand", version: int = FORMAT_VERSION
                     ) -> DemandSnapshot:
    data = _object(value, where, (), ("pending", "placement_groups", "constraints", "nodes"))
    groups = [_placement_group(item, f"{where}.placement_groups[{i}]", version)
              for i, item in enumerate(_list(data.get("placement_groups", []),
                                             f"{where}.placement_groups"))]
    nodes = []
    for i, item in enumerate(_list(data.get("nodes", []), f"{where}.nodes")):
        at = f"{where}.nodes[{i}]"
        node = _object(item, at, ("ip",), ("state", "node_id", "total", "available", "idle_s",
                                           *_v2(_V2_NODE, version)))
        total = _resources(node.get("total", {}), f"{at}.total")
        nodes.append(RayNode(
            ip=_string(node["ip"], f"{at}.ip"),
            state=_enum(RayNodeState, node.get("state", "ALIVE"), f"{at}.state"),
            node_id=_string(node.get("node_id", ""), f"{at}.node_id", allow_empty=True),
            total=total,
            available=_resources(node.get("available", total), f"{at}.available"),
            idle_s=_number(node.get("idle_s", 0.0), f"{at}.idle_s"),
            labels=_labels(node.get("labels", {}), f"{at}.labels"),
        ))
    return DemandSnapshot(
        pending=_bundles(data.get("pending", []), f"{where}.pending", version),
        placement_groups=tuple(groups),
        constraints=_bundles(data.get("constraints", []), f"{where}.constraints", version),
        nodes=tuple(nodes),
    )


@dataclass(frozen=True)
class PlanInput:
    """One situation to decide on: what `plan SNAPSHOT.json` reads."""

    config: Config
    machines: tuple[Machine, ...]
    demand: DemandSnapshot
    now: float
    # Add runs no demand needed, since when (a decision's `unneeded_since`): without it, a
    # run found unneeded now is only noted, as the agent's first iteration would.
    unneeded_since: dict[str, float] = dataclasses.field(default_factory=dict)
    # Active machines Ray did not list, since when (a decision's `absent_since`): without it,
    # the count starts at `now`, as in the agent's first iteration.
    absent_since: dict[str, float] = dataclasses.field(default_factory=dict)


def plan_input_from_dict(value: Any) -> PlanInput:
    data = _object(value, "snapshot", ("config", "now"),
                   ("format_version", "machines", "demand", "unneeded_since",
                    "absent_since"))
    version = _integer(data.get("format_version", FORMAT_VERSION), "format_version", 1)
    if version not in READABLE_VERSIONS:
        raise FormatError(f"format_version: {version} is not supported (this agent reads "
                          f"{' and '.join(str(v) for v in READABLE_VERSIONS)})")
    machines = tuple(machine_from_dict(item, f"machines[{i}]")
                     for i, item in enumerate(_list(data.get("machines", []), "machines")))
    ips = [machine.ip for machine in machines]
    if len(set(ips)) != len(ips):
        duplicate = next(ip for ip in ips if ips.count(ip) > 1)
        raise FormatError(f"machines: {duplicate} is listed twice")
    return PlanInput(
        config=config_from_dict(data["config"], version=version),
        machines=machines,
        demand=demand_from_dict(data.get("demand", {}), version=version),
        now=_number(data["now"], "now"),
        unneeded_since=_times(data.get("unneeded_since", {}), "unneeded_since", "request ids"),
        absent_since=_times(data.get("absent_since", {}), "absent_since", "addresses"),
    )


def _times(value: Any, where: str, keys: str) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise FormatError(f"{where}: expected an object of {keys} to times")
    return {_string(key, f"{where} key"): _number(at, f"{where}.{key}")
            for key, at in value.items()}


# ---------------------------------------------------------------- writing


def machine_to_dict(machine: Machine) -> dict[str, Any]:
    return {
        "ip": machine.ip, "node_type": machine.node_type, "state": machine.state.value,
        "since": machine.since, "reason": machine.reason, "last_error": machine.last_error,
        "failures": machine.failures, "next_attempt_at": machine.next_attempt_at,
        "request_id": machine.request_id, "success_count": machine.success_count,
    }


def action_to_dict(action: Action) -> dict[str, Any]:
    return {"kind": action.kind.value, "event": action.event.value,
            "node_type": action.node_type, "ips": list(action.ips), "reason": action.reason,
            "request_id": action.request_id}


def infeasible_to_dict(item: Infeasible) -> dict[str, Any]:
    return {"kind": item.kind.value, "demand": item.demand, "count": item.count,
            "reason": item.reason}


def decision_to_dict(decision: Decision) -> dict[str, Any]:
    return {
        "now": decision.now,
        "actions": [action_to_dict(action) for action in decision.actions],
        "infeasible": [infeasible_to_dict(item) for item in decision.infeasible],
        "notes": list(decision.notes),
    } | ({"unneeded_since": dict(decision.unneeded_since)} if decision.unneeded_since else {}) \
      | ({"absent_since": dict(decision.absent_since)} if decision.absent_since else {})
