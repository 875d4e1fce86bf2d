"""Contract of the Ray adapter against a real Ray 2.60 head with token authentication.

These pin the internal Ray API the agent depends on: if a Ray upgrade changes it, these fail
here rather than the agent misreading demand in production.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from onprem_ray_agent.adapters.ray_state import GcsRayState, RayUnavailable
from onprem_ray_agent.model import LabelOperator, PlacementStrategy, RayNodeState

pytestmark = pytest.mark.ray

RAY_BIN = Path(sys.executable).parent / "ray"
AGENT_DIR = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head on loopback with token auth, in its own process group (never `ray stop`,
    which would also stop Ray inside the test pool's containers)."""
    root = tmp_path_factory.mktemp("rayhead")
    token = root / "token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    port = _free_port()
    env = os.environ | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    proc = subprocess.Popen(
        [str(RAY_BIN), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={port}", "--num-cpus=2", "--resources", json.dumps({"spare_slot": 1}),
         "--labels=zone=lab,tier=head",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={root}/t"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    try:
        deadline = time.monotonic() + 60
        while True:
            # The GCS answers before the head's raylet has registered: wait for the node.
            try:
                snap = GcsRayState(address, timeout_s=2).snapshot()
                if any(n.state == RayNodeState.ALIVE for n in snap.nodes):
                    break
            except RayUnavailable:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
            assert time.monotonic() < deadline, "the Ray head never registered its node"
            time.sleep(0.5)
        yield {"address": address, "env": env, "token": token, "root": root}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _driver(ray_head, body: str) -> None:
    """Run `body` as a Ray driver in its own process, the way a user's job would."""
    script = f"import ray\nray.init(address={ray_head['address']!r}, namespace='contract')\n"
    script += textwrap.dedent(body)
    subprocess.run([sys.executable, "-c", script], env=ray_head["env"], check=True,
                   capture_output=True, timeout=120)


def test_an_idle_head_is_one_alive_head_node(ray_head) -> None:
    ray = GcsRayState(ray_head["address"])
    snap = ray.snapshot()
    assert len(snap.nodes) == 1
    head = snap.nodes[0]
    assert head.state == RayNodeState.ALIVE and head.is_head
    assert head.labels["zone"] == "lab" and head.labels["tier"] == "head"
    assert head.total["CPU"] == 2.0 and head.available["CPU"] == 2.0
    assert head.total["spare_slot"] == 1.0
    assert not any(name.startswith("node:") for name in head.total)
    assert head.idle_s >= 0
    assert snap.pending == () and snap.placement_groups == ()
    assert ray.last_query_s > 0  # measured; its speed is bench/ray_state_query.py's question


def test_pending_actors_placement_groups_and_constraints_are_reported(ray_head) -> None:
    _driver(ray_head, """
        from ray.util.placement_group import placement_group
        from ray.autoscaler.sdk import request_resources

        @ray.remote(num_cpus=4)
        class Big:
            pass

        keep = [Big.options(name=f"big{i}", lifetime="detached").remote() for i in range(3)]
        placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD",
                        name="spread", lifetime="detached")
        request_resources(bundles=[{"CPU": 8}])
    """)
    deadline = time.monotonic() + 30
    while True:
        snap = GcsRayState(ray_head["address"]).snapshot()
        if snap.pending and snap.placement_groups and snap.constraints:
            break
        assert time.monotonic() < deadline, f"demand never showed up: {snap}"
        time.sleep(0.5)
    assert [(dict(b.resources), b.count) for b in snap.pending] == [({"CPU": 4.0}, 3)]
    (pg,) = snap.placement_groups
    assert pg.strategy == PlacementStrategy.STRICT_SPREAD
    assert [dict(b) for b in pg.bundles] == [{"CPU": 1.0}, {"CPU": 1.0}]
    assert pg.placed_on == ()
    assert [(dict(b.resources), b.count) for b in snap.constraints] == [({"CPU": 8.0}, 1)]
    _driver(ray_head, """
        from ray.autoscaler.sdk import request_resources
        from ray.util.placement_group import get_placement_group, remove_placement_group
        for i in range(3):
            ray.kill(ray.get_actor(f"big{i}"))
        remove_placement_group(get_placement_group("spread"))
        request_resources(bundles=[])
    """)


def test_label_selectors_of_tasks_and_placement_groups_are_reported(ray_head) -> None:
    """Ray 2.60's selector syntax: "v" is in, "!v" not in, "in(a,b)" / "!in(a,b)"."""
    _driver(ray_head, """
        from ray.util.placement_group import placement_group

        @ray.remote(num_cpus=1, label_selector={"gpu": "in(a100,h100)", "zone": "!lab"})
        class Picky:
            pass

        keep = Picky.options(name="picky", lifetime="detached").remote()
        placement_group([{"CPU": 1}, {"CPU": 1}], strategy="PACK", name="labelled",
                        lifetime="detached",
                        bundle_label_selector=[{"gpu": "a100"}, {}])
    """)
    deadline = time.monotonic() + 30
    while True:
        snap = GcsRayState(ray_head["address"]).snapshot()
        if snap.pending and snap.placement_groups:
            break
        assert time.monotonic() < deadline, f"demand never showed up: {snap}"
        time.sleep(0.5)
    try:
        (task,) = snap.pending
        (selector,) = task.label_selectors
        constraints = {c.key: (c.operator, c.values) for c in selector.constraints}
        assert constraints == {"gpu": (LabelOperator.IN, ("a100", "h100")),
                               "zone": (LabelOperator.NOT_IN, ("lab",))}
        (pg,) = snap.placement_groups
        assert pg.strategy == PlacementStrategy.PACK
        first, second = pg.selectors(0), pg.selectors(1)
        assert [str(s) for s in first] == ["{gpu=a100}"]
        assert second == ()  # Ray's empty selector: any node
    finally:
        _driver(ray_head, """
            from ray.util.placement_group import get_placement_group, remove_placement_group
            ray.kill(ray.get_actor("picky"))
            remove_placement_group(get_placement_group("labelled"))
        """)


def test_a_wrong_token_is_refused_clearly(ray_head, tmp_path) -> None:
    wrong = tmp_path / "wrong-token"
    wrong.write_text(secrets.token_hex(32))
    wrong.chmod(0o600)
    code = (
        "from onprem_ray_agent.adapters.ray_state import GcsRayState, RayUnavailable\n"
        f"try:\n    GcsRayState({ray_head['address']!r}, timeout_s=3).snapshot()\n"
        "except RayUnavailable as e:\n    print(e)\nelse:\n    print('ANSWERED')\n"
    )
    env = ray_head["env"] | {"RAY_AUTH_TOKEN_PATH": str(wrong), "PYTHONPATH": str(AGENT_DIR)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "ANSWERED" not in out
    assert ray_head["address"] in out
    assert "auth" in out.lower() or "token" in out.lower()


def test_an_unreachable_gcs_is_reported_not_hung() -> None:
    address = f"127.0.0.1:{_free_port()}"
    started = time.monotonic()
    with pytest.raises(RayUnavailable, match=address):
        GcsRayState(address, timeout_s=2).snapshot()
    assert time.monotonic() - started < 30


def test_the_agent_decides_on_a_real_snapshot(ray_head, tmp_path) -> None:
    """Ray's snapshot -> demand -> decision, dry: two 4-CPU actors the 2-CPU head cannot
    hold make the agent plan two 4-CPU workers, and nothing is acted on."""
    from onprem_ray_agent.loop import Agent
    from onprem_ray_agent.model import ActionKind, Config, NodeType
    from onprem_ray_agent.store import StateStore

    workers = ("10.0.1.1", "10.0.1.2", "10.0.1.3")
    # the address Ray reports for the head (not necessarily the one it was started with)
    (head,) = [n for n in GcsRayState(ray_head["address"]).snapshot().nodes if n.is_head]
    config = Config(head_ip=head.ip, upscaling_speed=2.0,
                    node_types=(NodeType("cpu", workers, {"CPU": 4.0}),))
    _driver(ray_head, """
        @ray.remote(num_cpus=4)
        class Big:
            pass

        keep = [Big.options(name=f"dry{i}", lifetime="detached").remote() for i in range(2)]
    """)
    store = StateStore.open(tmp_path / "state.db")
    try:
        agent = Agent(config, store, GcsRayState(ray_head["address"]), None, dry_run=True)
        deadline = time.monotonic() + 30
        while True:
            report = agent.iterate(time.time())
            adds = [a for a in report.acted if a.kind == ActionKind.ADD]
            if adds:
                break
            assert time.monotonic() < deadline, f"no add planned: {report}"
            time.sleep(0.5)
        assert [a.ips for a in adds] == [workers[:2]]
        assert "2 pending {'CPU': 4} bundles fit on type cpu" in adds[0].reason
        assert store.machines() == {} and store.runs() == []
    finally:
        store.close()
        _driver(ray_head, """
            for i in range(2):
                ray.kill(ray.get_actor(f"dry{i}"))
        """)
