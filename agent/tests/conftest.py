"""Makes the agent's package, and the builders next to the tests, importable when the tests
run from the repository root (`python -m pytest agent/tests`) without installing anything."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
AGENT_DIR = TESTS_DIR.parent

for directory in (TESTS_DIR, AGENT_DIR):
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))

# Hypothesis profiles: the repository's conftest.py.

# The smallest cluster file the agent's own tests load: a head and three CPU workers.
SMALL_CLUSTER = """\
plugin: onprem.ray.cluster
provider: {type: local, head_ip: 10.0.0.1}
auth: {ssh_user: ops}
head_node_type: head
available_node_types:
  head: {resources: {CPU: 0}}
  cpu:
    worker_ips: [10.0.1.1-10.0.1.3]
    resources: {CPU: 4}
"""


@pytest.fixture
def cluster_file(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yml"
    path.write_text(SMALL_CLUSTER)
    return path
