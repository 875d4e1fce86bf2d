"""The agent's vocabulary: configuration, machine lifecycle, Ray's demand, decisions.

Plain frozen dataclasses with no behaviour beyond validation and small derived values, so
that the policy, the store, the adapters and the tests all speak the same language.
"""

from __future__ import annotations

import functools
import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

Resources = Mapping[str, float]


class MachineState(StrEnum):
    """Where a machine of the pool is in its lifecycle (persisted in the state store)."""

    SPARE = "spare"  # in the pool, not running Ray for us
    JOINING = "joining"  # add_workers requested; not yet seen ALIVE in Ray
    ACTIVE = "active"  # a Ray worker seen ALIVE
    DRAINING = "draining"  # Ray was asked to drain it
    RETIRING = "retiring"  # drained; retire_workers is stopping Ray
    FAILED = "failed"  # the last add, or the node, failed; waits for its backoff
    QUARANTINED = "quarantined"  # failed too often; left alone until an operator releases it
    CANCELED = "canceled"  # its add run was canceled; retire_workers stops what it started


class Event(StrEnum):
    """What can happen to a machine; `transitions.TRANSITIONS` says which are legal where."""

    ADMITTED = "admitted"  # an IP appeared in the inventory
    ADD_REQUESTED = "add_requested"
    JOINED = "joined"  # seen ALIVE in Ray
    ADD_FAILED = "add_failed"
    JOIN_CANCELED = "join_canceled"  # its add run was canceled: no demand needed it any more
    UNREACHABLE = "unreachable"
    PROVISION_TIMEOUT = "provision_timeout"
    LOST = "lost"  # active, but Ray no longer lists it ALIVE
    IDLE_EXPIRED = "idle_expired"
    DRAIN_REQUESTED = "drain_requested"
    DRAINED = "drained"
    DRAIN_FAILED = "drain_failed"
    RETIRED = "retired"
    RETIRE_FAILED = "retire_failed"
    REMOVED_FROM_INVENTORY = "removed_from_inventory"
    QUARANTINE = "quarantine"
    BACKOFF_ELAPSED = "backoff_elapsed"
    RELEASED = "released"  # an operator takes a machine out of quarantine
    CLAIMED = "claimed"  # `up` starts Ray there itself (a claim): joining, with no run
    CLAIM_EXPIRED = "claim_expired"  # claimed by `up`, not ALIVE within provision_timeout_s
    CLAIM_RELEASED = "claim_released"  # claimed by `up`, which ended without it ALIVE


class PlacementStrategy(StrEnum):
    """Ray's placement group strategies (ray.util.placement_group)."""

    PACK = "PACK"
    SPREAD = "SPREAD"
    STRICT_PACK = "STRICT_PACK"
    STRICT_SPREAD = "STRICT_SPREAD"


class RayNodeState(StrEnum):
    ALIVE = "ALIVE"
    DEAD = "DEAD"


class ActionKind(StrEnum):
    """What the agent does with a decision; every kind applies one lifecycle event per IP."""

    ADMIT = "admit"  # record a new IP of the inventory as spare
    MARK = "mark"  # record an observation or a timeout; runs nothing
    FORGET = "forget"  # drop the record of an IP gone from the inventory
    RETIRE = "retire"  # drain in Ray, then run retire_workers
    ADD = "add"  # run add_workers
    CANCEL = "cancel"  # cancel the add run `request_id`: no demand needs its machines


class DemandKind(StrEnum):
    BUNDLE = "bundle"  # a pending task or actor
    PLACEMENT_GROUP = "placement_group"
    CONSTRAINT = "constraint"  # ray.autoscaler.sdk.request_resources()


class Purpose(StrEnum):
    """What a machine the plan adds is for: the reason an add action gives."""

    MIN_WORKERS = "min_workers"  # its node type is below min_workers
    GLOBAL_MIN = "global_min"  # the cluster is below min_workers
    CONSTRAINT = "constraint"  # request_resources()
    PLACEMENT_GROUP = "placement_group"
    PENDING = "pending"  # tasks and actors

    @property
    def urgent(self) -> bool:
        """Not held back by upscaling_speed: Ray's `_get_concurrent_resource_demand_to_launch`
        lets min_workers, request_resources() and placement groups "immediately scale up"."""
        return self is not Purpose.PENDING


class LabelOperator(StrEnum):
    """Ray 2.60's label selector operators (common.proto LabelSelectorOperator)."""

    IN = "in"  # the node has the key, with one of the values
    NOT_IN = "not_in"  # the node lacks the key, or has another value


@dataclass(frozen=True)
class LabelConstraint:
    key: str
    operator: LabelOperator
    values: tuple[str, ...]

    def __post_init__(self) -> None:
        # hashed for every node the planner tries: once is enough
        object.__setattr__(self, "_hash", hash((self.key, self.operator, self.values)))

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined]

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.operator == LabelOperator.IN:
            return value in self.values
        return value not in self.values

    def __str__(self) -> str:
        """Ray's selector syntax: "a", "!a", "in(a,b)", "!in(a,b)"."""
        negate = "!" if self.operator == LabelOperator.NOT_IN else ""
        if len(self.values) == 1:
            return f"{self.key}={negate}{self.values[0]}"
        return f"{self.key}={negate}in({','.join(self.values)})"


@dataclass(frozen=True)
class LabelSelector:
    """All its constraints must hold (a task's `label_selector`)."""

    constraints: tuple[LabelConstraint, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash(self.constraints))

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(constraint.matches(labels) for constraint in self.constraints)

    def __str__(self) -> str:
        return "{" + ", ".join(str(c) for c in self.constraints) + "}"


# Ray's ResourceRequest.label_selectors: alternatives, the first preferred (fallbacks).
Selectors = tuple[LabelSelector, ...]


def selectors_match(selectors: Selectors, labels: Mapping[str, str]) -> bool:
    return not selectors or any(selector.matches(labels) for selector in selectors)


def format_selectors(selectors: Selectors) -> str:
    """' with labels {gpu=a100}' (or ' or ' between fallbacks); '' without selectors."""
    if not selectors:
        return ""
    return " with labels " + " or ".join(str(selector) for selector in selectors)


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class NodeType:
    """A group of interchangeable machines (e.g. the GPU boxes)."""

    name: str
    ips: tuple[str, ...]
    # What one machine offers Ray. Empty: learnt from a machine of the type seen ALIVE.
    resources: Resources = field(default_factory=dict)
    min_workers: int = 0
    max_workers: int | None = None  # None: every machine of the type
    labels: Mapping[str, str] = field(default_factory=dict)  # `ray start --labels`
    idle_timeout_s: float | None = None  # None: the cluster's idle_timeout_minutes

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a node type needs a name")
        if self.min_workers < 0:
            raise ValueError(f"node type {self.name}: min_workers must be >= 0")
        if self.max_workers is not None and self.max_workers < 0:
            raise ValueError(f"node type {self.name}: max_workers must be >= 0")
        if len(set(self.ips)) != len(self.ips):
            raise ValueError(f"node type {self.name}: an IP is listed twice")
        for name, amount in self.resources.items():
            if amount < 0:
                raise ValueError(f"node type {self.name}: resource {name} is negative")

    @property
    def effective_max(self) -> int:
        return len(self.ips) if self.max_workers is None else self.max_workers

    @property
    def effective_min(self) -> int:
        # Ray: target = min(min_workers, max_workers) (_add_min_workers_nodes).
        return min(self.min_workers, self.effective_max)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff after failures: base, 2 x base, 4 x base ... capped at max."""

    base_s: float = 30.0
    max_s: float = 900.0

    def delay(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        return min(self.max_s, self.base_s * 2.0 ** min(failures - 1, 62))


@dataclass(frozen=True)
class Config:
    """What the agent needs to know of the cluster file; defaults follow Ray's."""

    head_ip: str
    node_types: tuple[NodeType, ...]
    head_node_type: str | None = None  # the head counts as running of this type
    min_workers: int = 0
    max_workers: int | None = None  # None: the whole pool
    upscaling_speed: float = 1.0  # Ray's cluster YAML default
    idle_timeout_minutes: float = 5.0
    max_concurrent_launches: int = 10  # Ray's AUTOSCALER_MAX_CONCURRENT_LAUNCHES
    provision_timeout_s: float = 600.0
    backoff_base_s: float = 30.0
    backoff_max_s: float = 900.0
    quarantine_after_failures: int = 5
    drain_deadline_s: float = 300.0
    # A running add whose machines no demand needs for this long is canceled.
    cancel_join_after_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.head_ip:
            raise ValueError("head_ip is required")
        seen: dict[str, str] = {}
        names: set[str] = set()
        for node_type in self.node_types:
            if node_type.name in names:
                raise ValueError(f"node type {node_type.name} is defined twice")
            names.add(node_type.name)
            for ip in node_type.ips:
                if ip in seen:
                    raise ValueError(
                        f"{ip} is listed in node types {seen[ip]} and {node_type.name}"
                    )
                seen[ip] = node_type.name
        for name in ("min_workers", "max_concurrent_launches", "quarantine_after_failures"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.max_workers is not None and self.max_workers < 0:
            raise ValueError("max_workers must be >= 0")
        for name in ("upscaling_speed", "idle_timeout_minutes", "provision_timeout_s",
                     "backoff_base_s", "backoff_max_s", "drain_deadline_s"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not (self.cancel_join_after_s > 0 and math.isfinite(self.cancel_join_after_s)):
            raise ValueError("cancel_join_after_s must be a finite number > 0 (to never "
                             "cancel a join, set it above provision_timeout_s), got "
                             f"{self.cancel_join_after_s!r}")

    @property
    def backoff(self) -> Backoff:
        return Backoff(self.backoff_base_s, self.backoff_max_s)

    @property
    def idle_timeout_s(self) -> float:
        return 60.0 * self.idle_timeout_minutes

    def node_type(self, name: str) -> NodeType | None:
        return self._types_by_name.get(name)

    @functools.cached_property
    def _types_by_name(self) -> dict[str, NodeType]:
        return {node_type.name: node_type for node_type in self.node_types}

    def idle_timeout_of(self, name: str) -> float:
        """The type's own idle_timeout_s (Ray's per-type key), else idle_timeout_minutes."""
        node_type = self.node_type(name)
        if node_type is not None and node_type.idle_timeout_s is not None:
            return node_type.idle_timeout_s
        return self.idle_timeout_s


# ---------------------------------------------------------------- machines


@dataclass(frozen=True)
class Machine:
    """The lifecycle record of one machine of the pool, as the state store keeps it."""

    ip: str
    node_type: str
    state: MachineState = MachineState.SPARE
    since: float = 0.0  # when it entered `state`
    reason: str = ""  # why it entered `state`
    last_error: str = ""
    failures: int = 0  # consecutive; reset when it joins
    next_attempt_at: float = 0.0  # a failed machine is not added again before this
    request_id: str = ""  # the last playbook run that touched it
    success_count: int = 0  # how many adds of it succeeded


# The request id of a machine claimed by `up` starts so (an agent's run: add- or retire-).
CLAIM_PREFIX = "up-"


def is_claim(request_id: str) -> bool:
    """Whether a machine's request id is `up`'s claim rather than a playbook run."""
    return request_id.startswith(CLAIM_PREFIX)


@dataclass(frozen=True)
class Claim:
    """Workers `up` starts Ray on itself, told to the agent before it does: the agent never
    adds them, and records them joining (request id `claim_id`, no run) until Ray lists them
    ALIVE. Valid for provision_timeout_s from `at`. Open (`ended` false) while `up` runs:
    its workers are not retired as idle. `ended`: `up` has finished (its last task, success
    or failure); `released`: those of them it ended without bringing ALIVE (it failed
    there): spare again at once, no longer held."""

    claim_id: str
    at: float
    ips: frozenset[str]
    released: frozenset[str] = frozenset()
    ended: bool = False

    def __post_init__(self) -> None:
        if not is_claim(self.claim_id):
            raise ValueError(f"a claim id starts with {CLAIM_PREFIX!r}: {self.claim_id!r}")


@functools.lru_cache(maxsize=65536)
def ip_sort_key(ip: str) -> tuple[int, int, int, str]:
    """Addresses in numeric order (10.0.0.9 before 10.0.0.10), then names."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return (1, 0, 0, ip)
    return (0, address.version, int(address), ip)


def launch_preference(machine: Machine) -> tuple[int, tuple[int, int, int, str]]:
    """Machines that joined before come first, then address order."""
    return (-machine.success_count, ip_sort_key(machine.ip))


# ---------------------------------------------------------------- Ray's demand


@dataclass(frozen=True)
class BundleDemand:
    """`count` bundles of one shape: pending tasks/actors, or a request_resources() floor."""

    resources: Resources
    count: int = 1
    label_selectors: Selectors = ()  # the node must match one (Ray's label_selector)


@dataclass(frozen=True)
class PlacementGroupDemand:
    """The bundles of one pending placement group still waiting for a node."""

    id: str
    strategy: PlacementStrategy
    bundles: tuple[Resources, ...]
    # Per bundle (same order), Ray's bundle_label_selector; () when no bundle has one.
    bundle_selectors: tuple[Selectors, ...] = ()
    # A group partly placed (a node of it died): the addresses of the nodes that hold its
    # placed bundles. STRICT_SPREAD avoids them, STRICT_PACK is tied to them.
    placed_on: tuple[str, ...] = ()

    def selectors(self, index: int) -> Selectors:
        return self.bundle_selectors[index] if index < len(self.bundle_selectors) else ()


@dataclass(frozen=True)
class RayNode:
    """One node as Ray's GCS reports it."""

    ip: str
    state: RayNodeState = RayNodeState.ALIVE
    node_id: str = ""
    total: Resources = field(default_factory=dict)
    available: Resources = field(default_factory=dict)
    idle_s: float = 0.0  # Ray's idle duration: time since the node last ran anything
    labels: Mapping[str, str] = field(default_factory=dict)  # what label selectors see
    is_head: bool = False


@dataclass(frozen=True)
class DemandSnapshot:
    """What Ray wants and has, at one instant."""

    pending: tuple[BundleDemand, ...] = ()
    placement_groups: tuple[PlacementGroupDemand, ...] = ()
    constraints: tuple[BundleDemand, ...] = ()
    nodes: tuple[RayNode, ...] = ()


# ---------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Action:
    """One thing to do: apply `event` to every IP, running a playbook for add and retire."""

    kind: ActionKind
    event: Event
    ips: tuple[str, ...]
    node_type: str
    reason: str
    request_id: str = ""


@dataclass(frozen=True)
class Infeasible:
    """Demand that no machine the configuration allows could ever run."""

    kind: DemandKind
    demand: str  # canonical text of the shape(s), stable across iterations
    count: int
    reason: str

    @property
    def key(self) -> str:
        """Identity for reporting each infeasible demand once."""
        return f"{self.kind}:{self.demand}"


@dataclass(frozen=True)
class Decision:
    now: float
    actions: tuple[Action, ...] = ()
    infeasible: tuple[Infeasible, ...] = ()
    notes: tuple[str, ...] = ()
    # Add runs still running that no demand needs: request id -> since when. The loop gives
    # it back to the next decision, which cancels a run once this is cancel_join_after_s old.
    unneeded_since: Mapping[str, float] = field(default_factory=dict)
    # Active machines Ray does not list while the head is ALIVE: IP -> since when. The loop
    # gives it back to the next decision, which marks one lost once this is older than
    # provision_timeout_s.
    absent_since: Mapping[str, float] = field(default_factory=dict)

    def of_kind(self, kind: ActionKind) -> tuple[Action, ...]:
        return tuple(action for action in self.actions if action.kind == kind)

    def ips_of(self, kind: ActionKind) -> tuple[str, ...]:
        return tuple(ip for action in self.of_kind(kind) for ip in action.ips)

    def newly_infeasible(self, reported: set[str]) -> tuple[Infeasible, ...]:
        """The infeasible demands not in `reported` (keys): what to tell the operator now."""
        return tuple(item for item in self.infeasible if item.key not in reported)


def format_resources(resources: Resources) -> str:
    """{'CPU': 1, 'GPU': 0.5}: sorted, integral amounts without a trailing .0."""
    parts = []
    for name in sorted(resources):
        amount = float(resources[name])
        shown = int(amount) if amount.is_integer() else amount
        parts.append(f"{name!r}: {shown!r}")
    return "{" + ", ".join(parts) + "}"
