"""The agent as a process: the CLI forms, --once, --dry-run, the single-writer lock, SIGHUP
and SIGTERM (for real in a subprocess), status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from decide_fixtures import ip
from loop_fakes import FakeRay, FakeRunner

from onprem_ray_agent import cli
from onprem_ray_agent.config import load_config
from onprem_ray_agent.loop import Agent
from onprem_ray_agent.service import Options, Signals, run
from onprem_ray_agent.status import write_status_file
from onprem_ray_agent.store import StateStore

AGENT_DIR = Path(__file__).resolve().parents[1]
CPU = [ip("cpu", i) for i in (1, 2, 3)]
CLUSTER = """
    plugin: onprem.ray.cluster
    provider: {type: local, head_ip: 10.0.0.1}
    auth: {ssh_user: ops}
    idle_timeout_minutes: 1
    head_node_type: head
    available_node_types:
      head: {resources: {CPU: 0}}
      cpu:
        worker_ips: [10.0.1.1-10.0.1.3]
        resources: {CPU: 4}
"""


@pytest.fixture
def cluster_file(tmp_path) -> Path:
    path = tmp_path / "cluster.yml"
    path.write_text(textwrap.dedent(CLUSTER))
    return path


def options(tmp_path, cluster_file, **kwargs) -> Options:
    kwargs.setdefault("metrics_port", 0)
    return Options(cluster_file=cluster_file, state_dir=tmp_path / "state",
                   gcs_address="127.0.0.1:1", **kwargs)


def until(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def machines(tmp_path) -> dict[str, str]:
    store = StateStore.open_read_only(tmp_path / "state" / "state.db")
    try:
        return {address: m.state.value for address, m in store.machines().items()}
    finally:
        store.close()


def test_once_records_the_pool_and_the_iteration(tmp_path, cluster_file):
    code = run(options(tmp_path, cluster_file, once=True), signals=Signals(), ray=FakeRay(),
               runner=FakeRunner(pool=frozenset(CPU)))
    assert code == 0
    assert machines(tmp_path) == dict.fromkeys(CPU, "spare")
    last = json.loads((tmp_path / "state" / "status.json").read_text())
    assert [a["kind"] for a in last["decision"]["actions"]] == ["admit"]


def test_dry_run_prints_the_actions_and_writes_nothing(tmp_path, cluster_file):
    ray = FakeRay()
    ray.want(1, CPU=4)
    printed: list[str] = []
    code = run(options(tmp_path, cluster_file, once=True, dry_run=True), signals=Signals(),
               ray=ray, echo=printed.append)
    assert code == 0
    assert any(line.startswith("would admit 10.0.1.1, 10.0.1.2, 10.0.1.3") for line in printed)
    assert any(line.startswith("would add 10.0.1.1 (add_requested): 1 pending")
               for line in printed)
    assert not (tmp_path / "state" / "state.db").exists()


def test_a_refused_cluster_file_stops_the_start_with_its_reason(tmp_path, cluster_file,
                                                                  caplog):
    cluster_file.write_text(cluster_file.read_text().replace("idle_timeout_minutes: 1",
                                                             "idle_timeout_minutes: soon"))
    assert run(options(tmp_path, cluster_file, once=True), signals=Signals(),
               ray=FakeRay()) == 2
    assert "idle_timeout_minutes = 'soon'" in caplog.text
    assert str(cluster_file) in caplog.text


def test_reload_and_stop_between_iterations(tmp_path, cluster_file):
    signals, ray = Signals(), FakeRay()
    runner = FakeRunner(pool=frozenset(CPU))
    ray.want(1, CPU=4)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(run(
        options(tmp_path, cluster_file, interval_s=0.05), signals=signals, ray=ray,
        runner=runner)))
    thread.start()
    try:
        until(lambda: runner.running())
        cluster_file.write_text(cluster_file.read_text().replace("10.0.1.1-10.0.1.3",
                                                                 "10.0.1.1-10.0.1.4"))
        runner.pool = frozenset([*CPU, "10.0.1.4"])
        signals.reload.set()
        until(lambda: "10.0.1.4" in machines(tmp_path))
        (request_id,) = runner.running()
    finally:
        signals.stop.set()
        thread.join(30)
    assert codes == [0]
    assert runner.canceled == [request_id]  # SIGTERM: the run under way is canceled
    store = StateStore.open_read_only(tmp_path / "state" / "state.db")
    try:
        assert store.run(request_id).outcome == "canceled"
    finally:
        store.close()


def test_the_service_as_systemd_runs_it(tmp_path, cluster_file):
    """Options only (no command) means run; a second agent is refused; SIGHUP with a bad
    file keeps the old settings; SIGTERM exits 0."""
    state = tmp_path / "state"
    argv = [sys.executable, "-m", "onprem_ray_agent.cli", "--cluster-file", str(cluster_file),
            "--state-dir", str(state), "--gcs-address", "127.0.0.1:1", "--interval", "0.2",
            "--metrics-port", "0"]
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(AGENT_DIR), *sys.path])}
    log = tmp_path / "agent.log"
    with log.open("w") as stream:
        agent = subprocess.Popen(argv, env=env, stderr=stream, stdout=stream)
    try:
        until(lambda: "Ray's GCS cannot be asked" in log.read_text())
        second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 3
        assert "only one agent may run per state store" in second.stderr
        cluster_file.write_text("provider: [\n")
        agent.send_signal(signal.SIGHUP)
        until(lambda: "keeping the previous settings" in log.read_text())
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
    assert "agent stopped" in log.read_text()


def test_status_shows_machines_runs_and_the_next_actions(tmp_path, cluster_file, capsys):
    ray = FakeRay()
    ray.want(1, CPU=4)
    runner = FakeRunner(pool=frozenset(CPU))
    state = tmp_path / "state"
    store = StateStore.open(state / "state.db")
    try:
        agent = Agent(load_config(cluster_file).config, store, ray, runner)
        agent.iterate(time.time())
        # the add fails on its host, with the playbook's output
        request_id = runner.last().request_id
        runner.finish(request_id, "failed", hosts={CPU[0]: "failed"},
                      errors={CPU[0]: "Install Ray: pip: No matching distribution"})
        write_status_file(state, agent.iterate(time.time()))  # no agent address: no Ray
    finally:
        store.close()
    assert cli.main(["status", "--state-dir", str(state)]) == 0
    text = capsys.readouterr().out
    assert "10.0.1.1" in text and "failed" in text
    assert "Install Ray: pip: No matching distribution" in text
    assert f"{request_id}: add failed" in text
    assert "Actions of the last iteration (" in text and "Ray was not asked now" in text
    assert cli.main(["status", "--json", "--state-dir", str(state)]) == 0
    status = json.loads(capsys.readouterr().out)
    failed = next(m for m in status["machines"] if m["ip"] == CPU[0])
    assert failed["state"] == "failed"
    assert "No matching distribution" in failed["last_error"]
    assert status["recent_runs"][0]["hosts"] == {CPU[0]: "failed"}
    assert status["next"]["demand"]["by_resource"] == {"CPU": 4.0}
    # the failed machine backs off: the next add goes to another spare
    assert [a["ips"] for a in status["next"]["decision"]["actions"] if a["kind"] == "add"] \
        == [[CPU[1]]]


def test_status_counts_an_absence_from_the_running_agents_last_iteration(
        tmp_path, cluster_file, capsys, monkeypatch):
    from onprem_ray_agent.adapters import ray_state

    ray = FakeRay()
    ray.alive("cpu", 1)
    state = tmp_path / "state"
    store = StateStore.open(state / "state.db")
    started = time.time() - 700
    try:
        agent = Agent(load_config(cluster_file).config, store, ray,
                      FakeRunner(pool=frozenset(CPU)))
        agent.iterate(started - 10)  # 10.0.1.1 active
        ray.restarted()  # the head's Ray restarted; 10.0.1.1 never registers again
        write_status_file(state, agent.iterate(started), cluster_file=str(cluster_file),
                          gcs_address="10.0.0.1:6379")
    finally:
        store.close()
    monkeypatch.setattr(ray_state, "GcsRayState", lambda address: ray)
    assert cli.main(["status", "--json", "--state-dir", str(state)]) == 0
    decision = json.loads(capsys.readouterr().out)["next"]["decision"]
    (lost,) = [a for a in decision["actions"] if a["event"] == "lost"]
    assert lost["ips"] == [CPU[0]]
    assert lost["reason"].startswith("not in Ray's node list for 70")  # 700 s or a bit more
    assert machines(tmp_path)[CPU[0]] == "active"  # status changed nothing


def test_status_without_a_store_says_so(tmp_path, capsys):
    assert cli.main(["status", "--state-dir", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_status_decides_afresh_with_the_running_agents_settings(tmp_path, cluster_file,
                                                                capsys, monkeypatch):
    from onprem_ray_agent.adapters import ray_state

    ray = FakeRay()
    state = tmp_path / "state"
    store = StateStore.open(state / "state.db")
    try:
        agent = Agent(load_config(cluster_file).config, store, ray,
                      FakeRunner(pool=frozenset(CPU)))
        write_status_file(state, agent.iterate(time.time()),
                          cluster_file=str(cluster_file), gcs_address="10.0.0.1:6379")
    finally:
        store.close()
    ray.want(2, CPU=4)  # demand arrived since the agent's last iteration
    asked: list[str] = []
    monkeypatch.setattr(ray_state, "GcsRayState", lambda address: asked.append(address) or ray)
    assert cli.main(["status", "--state-dir", str(state)]) == 0
    text = capsys.readouterr().out
    assert asked == ["10.0.0.1:6379"]
    assert "Next actions (decided now; nothing is done by status):" in text
    # upscaling_speed 1 with nothing running: one add now, the other held with the reason
    assert "add 10.0.1.1: 1 pending {'CPU': 4} bundle fits on type cpu" in text
    assert "note: holding 1 of 2 planned adds of type cpu: upscaling_speed 1" in text
    assert machines(tmp_path) == dict.fromkeys(CPU, "spare")  # status changed nothing

    ray.down = "refused"  # without Ray: the last iteration, said as such
    assert cli.main(["status", "--state-dir", str(state)]) == 0
    assert "Actions of the last iteration (" in capsys.readouterr().out
