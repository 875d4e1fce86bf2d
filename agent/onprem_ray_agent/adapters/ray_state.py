"""Ray's view of the cluster, read from the head's GCS without `ray.init()`, in the model's
types (`DemandSnapshot`): the pure modules never see Ray's.

Ray 2.60's autoscaler v2 state (`GcsClient.get_cluster_status`, whose reply carries the
`ClusterResourceState` that `ray.autoscaler.v2.sdk.get_cluster_resource_state` returns) is a
pinned, internal API: everything that touches it lives in this module, and the contract tests
in agent/tests/contract/ hold it to a real Ray head. Read from it: each node's resources,
idle time and labels; pending tasks and actors with their `label_selector`; placement groups
with their strategy, each bundle's `bundle_label_selector`, and the nodes that hold the bundles
of a group already placed in part (the nodes Ray marks with the group's `_PG_` label); and the
`request_resources()` constraints. Ray 2.60's label selector operators are `in` and `not in`
(`!in(...)`); a selector `{"key": "value"}` is `in` with one value, `"!value"` is `not in`.

The calling process needs Ray's token settings in its environment (RAY_AUTH_MODE=token,
RAY_AUTH_TOKEN_PATH=...), as the agent's systemd unit provides.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterable, Mapping
from typing import Any

from onprem_ray_agent.model import (
    BundleDemand,
    DemandSnapshot,
    LabelConstraint,
    LabelOperator,
    LabelSelector,
    PlacementGroupDemand,
    PlacementStrategy,
    RayNode,
    RayNodeState,
    Selectors,
)

HEAD_MARKER = "node:__internal_head__"
# Ray's drain reason for scale-down (autoscaler.proto DrainNodeReason).
DRAIN_REASON_IDLE_TERMINATION = 1
# ray._private.ray_constants.AUTOSCALER_RESOURCE_REQUEST_CHANNEL
V1_RESOURCE_REQUEST_KEY = b"autoscaler_resource_request"
# common.proto LabelSelectorOperator; any other value matches no node in Ray's scheduler.
_OPERATORS = {1: LabelOperator.IN, 2: LabelOperator.NOT_IN}
# autoscaler.proto NodeStatus (the contract tests check them against Ray's)
NODE_DEAD, NODE_IDLE = 2, 3


class RayUnavailable(RuntimeError):
    """The head's GCS could not be asked (down, unreachable, or the token was refused)."""


# ---------------------------------------------------------------- Ray's protos -> the model


def label_selectors(selectors: Iterable[Any]) -> Selectors:
    """A request's `label_selectors` (alternatives, the first preferred). Ray sends one empty
    selector for a task that selects nothing: that is no selector."""
    out = []
    for selector in selectors:
        constraints = []
        for constraint in selector.label_constraints:
            operator = _OPERATORS.get(constraint.operator)
            values = tuple(sorted(constraint.label_values))  # a set to Ray
            if operator is None:  # unknown to Ray 2.60's scheduler: matches nothing
                operator, values = LabelOperator.IN, ()
            constraints.append(LabelConstraint(constraint.label_key, operator, values))
        out.append(LabelSelector(tuple(constraints)))
    if all(not selector.constraints for selector in out):
        return ()
    return tuple(out)


def _bundle(request: Any, count: int) -> BundleDemand:
    return BundleDemand(resources=dict(request.resources_bundle), count=count,
                        label_selectors=label_selectors(request.label_selectors))


def _strategy(details: str) -> tuple[str, PlacementStrategy]:
    """Ray's gang request details: "<pg id>:<strategy>|<state>"."""
    pg_id, _, rest = details.partition(":")
    name = rest.partition("|")[0].upper()
    try:
        return pg_id, PlacementStrategy(name)
    except ValueError:
        # Ray's default strategy; a name this agent does not know is planned as best effort.
        return pg_id, PlacementStrategy.PACK


def _placement_group(gang: Any, node_labels: Mapping[str, Mapping[str, str]]
                     ) -> PlacementGroupDemand:
    requests = (gang.bundle_selectors[0].resource_requests if gang.bundle_selectors
                else gang.requests)
    pg_id, strategy = _strategy(gang.details)
    # STRICT groups' bundles carry the group's label as (anti-)affinity; the nodes that
    # already hold bundles of the group carry it too.
    marks = set()
    for request in requests:
        for constraint in request.placement_constraints:
            for kind in ("anti_affinity", "affinity"):
                if constraint.HasField(kind):
                    mark = getattr(constraint, kind)
                    marks.add((mark.label_name, mark.label_value))
    placed_on = tuple(sorted(ip for ip, labels in node_labels.items()
                             if any(labels.get(name) == value for name, value in marks)))
    return PlacementGroupDemand(
        id=pg_id or gang.details, strategy=strategy,
        bundles=tuple(dict(request.resources_bundle) for request in requests),
        bundle_selectors=tuple(label_selectors(request.label_selectors)
                               for request in requests),
        placed_on=placed_on)


def _node(state: Any) -> RayNode:
    total = {name: float(amount) for name, amount in state.total_resources.items()
             if not name.startswith("node:")}  # Ray's per-node marker resources
    available = {name: float(state.available_resources.get(name, 0.0)) for name in total}
    dead = state.status == NODE_DEAD
    return RayNode(
        ip=state.node_ip_address,
        state=RayNodeState.DEAD if dead else RayNodeState.ALIVE,
        node_id=state.node_id.hex(),
        total=total,
        available=available,
        idle_s=(state.idle_duration_ms / 1000.0) if state.status == NODE_IDLE else 0.0,
        labels=dict(state.labels),
        is_head=HEAD_MARKER in state.total_resources,
    )


def snapshot_from_state(state: Any, legacy_request: bytes | None = None) -> DemandSnapshot:
    """Ray's `ClusterResourceState` -> the model. `legacy_request`: what a driver's
    `request_resources()` wrote to the GCS's KV store (used when the state has none)."""
    node_labels = {n.node_ip_address: dict(n.dynamic_labels) for n in state.node_states
                   if n.status != NODE_DEAD and n.dynamic_labels}
    constraints = tuple(_bundle(r.request, int(r.count))
                        for constraint in state.cluster_resource_constraints
                        for r in constraint.resource_requests if r.count > 0)
    return DemandSnapshot(
        pending=tuple(_bundle(r.request, int(r.count))
                      for r in state.pending_resource_requests if r.count > 0),
        placement_groups=tuple(group for group in (
            _placement_group(gang, node_labels)
            for gang in state.pending_gang_resource_requests) if group.bundles),
        constraints=constraints or _legacy_constraints(legacy_request),
        nodes=tuple(_node(n) for n in state.node_states),
    )


class GcsRayState:
    """Reads snapshots from, and asks drains of, the GCS at `gcs_address` (host:port)."""

    def __init__(self, gcs_address: str, timeout_s: int = 5) -> None:
        self.gcs_address = gcs_address
        self.timeout_s = timeout_s
        self._client = None
        self.last_query_s = 0.0  # how long the GCS took to answer the last snapshot

    def _gcs(self):
        """One GcsClient, made after a plain TCP probe: Ray's own client waits about 35 s
        for a GCS that is down, and the agent must say so within its timeout instead."""
        host, _, port = self.gcs_address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=self.timeout_s).close()
        except (OSError, ValueError) as err:
            self._client = None
            raise RayUnavailable(f"Ray GCS at {self.gcs_address}: {err}") from err
        if self._client is None:
            from ray._raylet import GcsClient

            try:
                self._client = GcsClient(address=self.gcs_address)
            except Exception as err:  # a refused token already fails here
                raise self._fail("connect", err) from err
        return self._client

    def _fail(self, what: str, err: Exception) -> RayUnavailable:
        self._client = None
        return RayUnavailable(f"Ray GCS at {self.gcs_address}: {what}: "
                              f"{type(err).__name__}: {err}")

    def snapshot(self) -> DemandSnapshot:
        from ray.core.generated.autoscaler_pb2 import GetClusterStatusReply

        started = time.monotonic()
        client = self._gcs()
        try:
            reply = GetClusterStatusReply()
            reply.ParseFromString(client.get_cluster_status(timeout_s=self.timeout_s))
            legacy_request = client.internal_kv_get(V1_RESOURCE_REQUEST_KEY, None,
                                                    timeout=self.timeout_s)
        except Exception as err:  # Ray raises several unrelated types for the same failure
            raise self._fail("cluster status", err) from err
        snapshot = snapshot_from_state(reply.cluster_resource_state, legacy_request)
        self.last_query_s = time.monotonic() - started
        return snapshot

    def drain(self, node_id: str, reason: str, deadline_s: float) -> tuple[bool, str]:
        """Ask Ray to drain `node_id`; return (accepted, Ray's reason when it refuses)."""
        deadline_ms = int((time.time() + deadline_s) * 1000)
        client = self._gcs()
        try:
            accepted, rejection = client.drain_node(
                node_id, DRAIN_REASON_IDLE_TERMINATION, reason, deadline_ms
            )
        except Exception as err:  # see snapshot()
            raise self._fail(f"drain of node {node_id}", err) from err
        return bool(accepted), str(rejection or "")


def _legacy_constraints(raw: bytes | None) -> tuple[BundleDemand, ...]:
    """`request_resources()` from a driver writes a JSON list of bundles to this KV key
    unless the head runs autoscaler v2 (ray/autoscaler/_private/commands.py)."""
    if not raw:
        return ()
    try:
        requested = json.loads(raw)
    except ValueError:
        return ()
    counts: dict[tuple[tuple[str, float], ...], int] = {}
    for bundle in requested if isinstance(requested, list) else []:
        if isinstance(bundle, dict):
            key = tuple(sorted((str(k), float(v)) for k, v in bundle.items()))
            counts[key] = counts.get(key, 0) + 1
    return tuple(BundleDemand(dict(key), n) for key, n in counts.items())
