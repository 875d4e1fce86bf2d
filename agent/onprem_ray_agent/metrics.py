"""The agent's Prometheus metrics, in a registry of its own, served over HTTP.

Counters carry no per-host labels (hosts come and go; their history is in the state store).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from onprem_ray_agent import DEFAULT_METRICS_PORT
from onprem_ray_agent.demand import pending_by_resource
from onprem_ray_agent.model import Config, Machine, MachineState

PREFIX = "onprem_ray_agent"
DEFAULT_PORT = DEFAULT_METRICS_PORT
# Playbook runs and scale-up take seconds to minutes.
_SLOW_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200)
_LOOP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class AgentMetrics:
    """What the loop reports, as Prometheus metrics (see agent/docs/agent.md)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.machines = Gauge(f"{PREFIX}_machines", "Machines of the pool by lifecycle state "
                              "and node type", ["state", "node_type"], registry=r)
        self.pending = Gauge(f"{PREFIX}_pending_demand", "Resources asked for by pending "
                             "tasks, actors and placement groups", ["resource"], registry=r)
        self.infeasible = Gauge(f"{PREFIX}_infeasible_demands", "Distinct pending demands no "
                                "node type can ever run", registry=r)
        self.actions = Counter(f"{PREFIX}_actions", "Actions taken, by kind (machines count "
                               "one each)", ["kind"], registry=r)
        self.runs = Counter(f"{PREFIX}_playbook_runs", "Playbook runs ended, by playbook and "
                            "outcome", ["playbook", "outcome"], registry=r)
        self.run_duration = Histogram(f"{PREFIX}_playbook_duration_seconds", "How long "
                                      "playbook runs took", ["playbook"],
                                      buckets=_SLOW_BUCKETS, registry=r)
        self.scale_up = Histogram(f"{PREFIX}_scale_up_latency_seconds", "From pending demand "
                                  "first seen to the machine added for it ALIVE in Ray",
                                  buckets=_SLOW_BUCKETS, registry=r)
        self.loop = Histogram(f"{PREFIX}_loop_duration_seconds", "How long one iteration "
                              "took", buckets=_LOOP_BUCKETS, registry=r)
        self.last_success = Gauge(f"{PREFIX}_last_successful_iteration_timestamp_seconds",
                                  "When an iteration last read Ray's state and decided "
                                  "(Unix time)", registry=r)
        self.ray_up = Gauge(f"{PREFIX}_ray_gcs_up", "1 if Ray's GCS answered the last "
                            "iteration, else 0", registry=r)

    # ------------------------------------------------------------ what the loop calls

    def action(self, kind: str, count: int) -> None:
        self.actions.labels(kind=kind).inc(count)

    def run_finished(self, playbook: str, outcome: str, duration_s: float | None) -> None:
        self.runs.labels(playbook=playbook, outcome=outcome).inc()
        if duration_s is not None:
            self.run_duration.labels(playbook=playbook).observe(duration_s)

    def scale_up_latency(self, seconds: float) -> None:
        self.scale_up.observe(max(0.0, seconds))

    def iteration(self, report: Any, machines: Iterable[Machine], config: Config) -> None:
        self.loop.observe(report.duration_s)
        self.ray_up.set(1 if report.ok else 0)
        self._machines(machines, config)
        if not report.ok:
            return
        self.last_success.set(report.now)
        self.pending.clear()
        for resource, amount in sorted(pending_by_resource(report.demand).items()):
            self.pending.labels(resource=resource).set(amount)
        self.infeasible.set(len(report.decision.infeasible))

    def _machines(self, machines: Iterable[Machine], config: Config) -> None:
        counts: dict[tuple[str, str], int] = {}
        for node_type in config.node_types:
            for state in MachineState:
                counts[(state.value, node_type.name)] = 0
        for machine in machines:
            key = (machine.state.value, machine.node_type)
            counts[key] = counts.get(key, 0) + 1
        self.machines.clear()  # a node type gone from the inventory leaves no stale series
        for (state, node_type), count in sorted(counts.items()):
            self.machines.labels(state=state, node_type=node_type).set(count)

    # ------------------------------------------------------------ serving

    def serve(self, address: str, port: int = DEFAULT_PORT) -> Any:
        """Serve /metrics on address:port in a background thread; returns the server."""
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        return server
