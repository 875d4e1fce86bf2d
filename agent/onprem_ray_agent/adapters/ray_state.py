"""Ray's view of the cluster, read from the head's GCS without `ray.init()`.

Ray 2.60's autoscaler v2 SDK (`ray.autoscaler.v2.sdk.get_cluster_status`) is a pinned,
internal API: everything that touches it lives in this module, and the contract tests in
agent/tests/contract/ hold it to a real Ray head. The rest of the agent sees only the plain
records below.

The calling process needs Ray's token settings in its environment (RAY_AUTH_MODE=token,
RAY_AUTH_TOKEN_PATH=...), as the agent's systemd unit provides.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

HEAD_MARKER = "node:__internal_head__"
# Ray's drain reason for scale-down (autoscaler.proto DrainNodeReason).
DRAIN_REASON_IDLE_TERMINATION = 1
# ray._private.ray_constants.AUTOSCALER_RESOURCE_REQUEST_CHANNEL
V1_RESOURCE_REQUEST_KEY = b"autoscaler_resource_request"


class RayUnavailable(RuntimeError):
    """The head's GCS could not be asked (down, unreachable, or the token was refused)."""


def _frozen(values: Mapping[str, float]) -> Mapping[str, float]:
    return MappingProxyType(dict(values))


@dataclass(frozen=True)
class Bundles:
    """`count` identical resource requests of `shape` (e.g. {'CPU': 1.0} x 3)."""

    shape: Mapping[str, float]
    count: int


@dataclass(frozen=True)
class PlacementGroupDemand:
    pg_id: str
    strategy: str  # PACK, SPREAD, STRICT_PACK or STRICT_SPREAD
    bundles: tuple[Bundles, ...]


@dataclass(frozen=True)
class RayNode:
    node_id: str
    ip: str
    alive: bool
    is_head: bool
    total: Mapping[str, float]
    available: Mapping[str, float]
    idle_s: float  # how long Ray has seen the node idle; 0 while it runs work
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RaySnapshot:
    nodes: tuple[RayNode, ...]
    task_actor_demand: tuple[Bundles, ...]
    placement_groups: tuple[PlacementGroupDemand, ...]
    constraints: tuple[Bundles, ...]  # request_resources(): capacity to keep, not work
    query_s: float  # how long the GCS took to answer


def _bundles(demands) -> tuple[Bundles, ...]:
    out = []
    for demand in demands:
        for by_count in demand.bundles_by_count:
            out.append(Bundles(_frozen(by_count.bundle), int(by_count.count)))
    return tuple(out)


def _node(info, alive: bool) -> RayNode:
    total: dict[str, float] = {}
    available: dict[str, float] = {}
    idle_ms = 0
    is_head = False
    if info.resource_usage is not None:
        idle_ms = info.resource_usage.idle_time_ms or 0
        for usage in info.resource_usage.usage:
            if usage.resource_name == HEAD_MARKER:
                is_head = True
            if usage.resource_name.startswith("node:"):
                continue  # Ray's per-node marker resources, not capacity
            total[usage.resource_name] = usage.total
            available[usage.resource_name] = usage.total - usage.used
    return RayNode(
        node_id=info.node_id or "",
        ip=info.ip_address,
        alive=alive,
        is_head=is_head,
        total=_frozen(total),
        available=_frozen(available),
        idle_s=idle_ms / 1000.0,
        labels=MappingProxyType(dict(info.labels or {})),
    )


class GcsRayState:
    """Reads snapshots from, and asks drains of, the GCS at `gcs_address` (host:port)."""

    def __init__(self, gcs_address: str, timeout_s: int = 5) -> None:
        self.gcs_address = gcs_address
        self.timeout_s = timeout_s
        self._client = None

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

    def snapshot(self) -> RaySnapshot:
        from ray.autoscaler.v2.schema import Stats
        from ray.autoscaler.v2.utils import ClusterStatusParser
        from ray.core.generated.autoscaler_pb2 import GetClusterStatusReply

        started = time.monotonic()
        client = self._gcs()
        try:
            reply = GetClusterStatusReply()
            reply.ParseFromString(client.get_cluster_status(timeout_s=self.timeout_s))
            status = ClusterStatusParser.from_get_cluster_status_reply(reply, stats=Stats())
            legacy_request = client.internal_kv_get(V1_RESOURCE_REQUEST_KEY, None,
                                                    timeout=self.timeout_s)
        except Exception as err:  # Ray raises several unrelated types for the same failure
            raise self._fail("cluster status", err) from err
        demands = status.resource_demands
        nodes = [_node(n, alive=True) for n in (*status.active_nodes, *status.idle_nodes)]
        nodes += [_node(n, alive=False) for n in status.failed_nodes]
        return RaySnapshot(
            nodes=tuple(nodes),
            task_actor_demand=_bundles(demands.ray_task_actor_demand),
            placement_groups=tuple(
                PlacementGroupDemand(
                    pg_id=pg.pg_id or "",
                    strategy=pg.strategy or "PACK",
                    bundles=_bundles([pg]),
                )
                for pg in demands.placement_group_demand
            ),
            constraints=_bundles(demands.cluster_constraint_demand)
            or _legacy_constraints(legacy_request),
            query_s=time.monotonic() - started,
        )

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


def _legacy_constraints(raw: bytes | None) -> tuple[Bundles, ...]:
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
    return tuple(Bundles(_frozen(dict(key)), n) for key, n in counts.items())
