"""Print the ALIVE nodes of the cluster whose GCS is argv[1], as JSON (no ray.init())."""

import json
import sys

from ray._raylet import GcsClient
from ray.core.generated import gcs_pb2

nodes = GcsClient(address=sys.argv[1]).get_all_node_info(timeout=10).values()
print(json.dumps(sorted(n.node_manager_address for n in nodes
                        if n.state == gcs_pb2.GcsNodeInfo.ALIVE)))
