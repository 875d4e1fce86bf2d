"""The agent's Prometheus metrics: fed by real iterations of the loop, read back from the
registry and over HTTP."""

from __future__ import annotations

import socket
import urllib.request

from decide_fixtures import NOW, config, ip, node_type
from loop_fakes import FakeRay, FakeRunner
from prometheus_client.parser import text_string_to_metric_families

from onprem_ray_agent.adapters.runner import ADD_WORKERS
from onprem_ray_agent.loop import Agent
from onprem_ray_agent.metrics import AgentMetrics
from onprem_ray_agent.store import StateStore

CPU = [ip("cpu", i) for i in (1, 2, 3)]


def value(metrics: AgentMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def scale_up_once(tmp_path) -> AgentMetrics:
    metrics = AgentMetrics()
    ray, runner = FakeRay(), FakeRunner(pool=frozenset(CPU))
    store = StateStore.open(tmp_path / "state.db")
    try:
        agent = Agent(config(node_type("cpu", 3)), store, ray, runner, metrics=metrics)
        ray.want(2, CPU=4)
        agent.iterate(NOW)
        runner.finish(runner.last().request_id)
        ray.alive("cpu", 1, busy=True)
        ray.alive("cpu", 2, busy=True)
        ray.want(1, CPU=2, GPU=1)  # nothing can run it: infeasible
        agent.iterate(NOW + 7)
        ray.down = "refused"
        agent.iterate(NOW + 9)
    finally:
        store.close()
    return metrics


def test_the_loop_feeds_every_metric(tmp_path):
    metrics = scale_up_once(tmp_path)
    p = "onprem_ray_agent"
    assert value(metrics, f"{p}_machines", state="active", node_type="cpu") == 2
    assert value(metrics, f"{p}_machines", state="spare", node_type="cpu") == 1
    assert value(metrics, f"{p}_machines", state="failed", node_type="cpu") == 0
    assert value(metrics, f"{p}_actions_total", kind="add") == 2
    assert value(metrics, f"{p}_actions_total", kind="admit") == 3
    assert value(metrics, f"{p}_playbook_runs_total", playbook=ADD_WORKERS,
                 outcome="successful") == 1
    assert value(metrics, f"{p}_playbook_duration_seconds_count", playbook=ADD_WORKERS) == 1
    assert value(metrics, f"{p}_scale_up_latency_seconds_count") == 2
    assert value(metrics, f"{p}_scale_up_latency_seconds_sum") == 14.0
    assert value(metrics, f"{p}_loop_duration_seconds_count") == 3
    # the last iteration could not reach Ray: the last success stays at the one before
    assert value(metrics, f"{p}_last_successful_iteration_timestamp_seconds") == NOW + 7
    assert value(metrics, f"{p}_ray_gcs_up") == 0
    assert value(metrics, f"{p}_pending_demand", resource="GPU") == 1
    assert value(metrics, f"{p}_infeasible_demands") == 1


def test_metrics_are_served_on_the_given_address_with_no_per_host_labels(tmp_path):
    metrics = scale_up_once(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = metrics.serve("127.0.0.1", port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "onprem_ray_agent_actions" in families
    assert families["onprem_ray_agent_actions"].type == "counter"
    for family in families.values():
        if family.type == "counter":
            for sample in family.samples:
                assert not {"ip", "host", "instance"} & set(sample.labels), sample
    assert all(name.startswith("onprem_ray_agent_") for name in families)
