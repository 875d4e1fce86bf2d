"""Labels end to end on the local test pool: two node types whose machines Ray starts with
different labels, and an actor whose `label_selector` only one of them matches. The agent adds
a machine of that type, and none of the other.

The pool's head (no labels) and 3 workers: two of type `general` (tier=general), one of type
`special` (tier=special); none started (min_workers 0). The setup and the helpers are those of
test_autoscaling.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import yaml

from tests.cluster import Cluster, forget_agent, recap, stop_workers
from tests.e2e.test_autoscaling import STATE_DIR, Autoscaled
from tests.pool import pool as pools
from tests.pool.wheelhouse import ensure_wheelhouse

pytestmark = [pytest.mark.pool, pytest.mark.e2e]

# A detached actor of one CPU that only a node labelled tier=special may hold.
CREATE_SELECTIVE_ACTOR = """
import sys, ray
ray.init(address=sys.argv[1], namespace="e2e-labels", logging_level="ERROR")
@ray.remote(num_cpus=1, label_selector={"tier": "special"})
class Picky:
    def where(self):
        return ray.util.get_node_ip_address()
Picky.options(name="picky", lifetime="detached", get_if_exists=True).remote()
"""
WHERE = """
import sys, ray
ray.init(address=sys.argv[1], namespace="e2e-labels", logging_level="ERROR")
print(ray.get(ray.get_actor("picky").where.remote(), timeout=float(sys.argv[2])))
"""
KILL = """
import sys, ray
ray.init(address=sys.argv[1], namespace="e2e-labels", logging_level="ERROR")
try:
    ray.kill(ray.get_actor("picky"))
except ValueError:
    pass
"""


@pytest.fixture(scope="module")
def labelled(pool: pools.Pool, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[Autoscaled, list[str], str, str]]:
    general = [m.ip for m in pool.workers[:2]]
    special = pool.workers[2].ip
    source = yaml.safe_load(pool.inventory.read_text())
    source["provider"].pop("worker_ips", None)
    source.update(min_workers=0, max_workers=3, idle_timeout_minutes=0.25,
                  head_node_type="head", available_node_types={
                      "head": {"resources": {}},
                      "general": {"worker_ips": general, "resources": {"CPU": 2},
                                  "labels": {"tier": "general"}},
                      "special": {"worker_ips": [special], "resources": {"CPU": 2},
                                  "labels": {"tier": "special"}}})
    inventory = tmp_path_factory.mktemp("labelled") / "cluster.yml"
    inventory.write_text(yaml.safe_dump(source, sort_keys=False))
    cluster = Cluster(pool=pool, wheelhouse=ensure_wheelhouse(), inventory=inventory)
    stop_workers(pool)  # start from no worker running
    # ... and from an agent that remembers nothing: earlier tests on this pool leave records
    # (a failed add, a backoff) that are theirs, not this test's.
    forget_agent(pool)
    # A busy host can take long to set up four machines: a generous limit for `up`.
    result = cluster.playbook("up", "-e", "ray_up_workers=min", "-e", "head_agent_enabled=true",
                              "-e", "head_agent_interval=1", timeout=1800)
    assert all(r["failed"] == 0 for r in recap(result.stdout).values())
    made = Autoscaled(cluster=cluster, unreachable="")
    made.wait("only the head ALIVE", lambda: made.workers_alive() == set(), timeout=120)
    yield made, general, special, made.now()
    made.ray(KILL, timeout=120)
    made.ssh("sudo", "systemctl", "disable", "--now", "onprem-ray-agent.service")


def test_a_task_selecting_a_label_gets_a_machine_of_that_type_only(labelled) -> None:
    scaled, general, special, since = labelled
    scaled.ray(CREATE_SELECTIVE_ACTOR)  # the head has free CPUs, but not the label
    scaled.wait("a worker ALIVE", lambda: bool(scaled.workers_alive()), timeout=240)
    assert scaled.workers_alive() == {special}
    assert scaled.ray(WHERE, "120").strip() == special
    time.sleep(5)  # a few more iterations: nothing else is added
    assert scaled.workers_alive() == {special}
    states = scaled.states()
    assert states[special] == "active" and all(states[ip] == "spare" for ip in general), states
    status = json.loads(scaled.ssh("onprem-ray-agent", "status", "--state-dir", STATE_DIR,
                                   "--json").stdout)
    # Ray also lists the DEAD nodes of earlier runs at the same address (without labels when
    # an earlier test started that machine without them): the ALIVE one is the one to read.
    labels = {n["ip"]: n["labels"] for n in status["next"]["demand"]["nodes"]
              if n["state"] == "ALIVE"}
    assert labels[special].get("tier") == "special"
    added = [line for line in scaled.journal(since).splitlines()
             if "(add_requested)" in line]
    assert added and all(special in line and "with labels {tier=special}" in line
                         for line in added), added
