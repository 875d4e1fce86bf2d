# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""What the modules that talk to Ray's GCS share: connect once the port answers, find a node.

Run with the Ray venv's interpreter (Ray is imported lazily) and the token settings
(RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH) in the environment.
"""

from __future__ import annotations

import socket
import time


class GcsUnreachable(Exception):
    """The GCS port did not accept a connection before the deadline."""


def split_address(address):
    """'host:port' -> (host, port); an IPv6 host may be bracketed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"not a host:port address: {address!r}")
    return host.strip("[]"), int(port)


def wait_for_port(address, timeout, interval=0.5, connect=socket.create_connection,
                  clock=time.monotonic, sleep=time.sleep):
    """Return once `address` accepts a TCP connection; GcsUnreachable after `timeout` s."""
    host, port = split_address(address)
    deadline = clock() + timeout
    while True:
        try:
            connect((host, port), timeout=2).close()
            return
        except OSError as err:
            if clock() >= deadline:
                raise GcsUnreachable(f"the head's GCS at {address} does not answer: {err}") from err
            sleep(interval)


def connect(address, timeout):
    """A GcsClient for `address`, once its port answers."""
    wait_for_port(address, timeout)
    from ray._raylet import GcsClient  # pylint: disable=import-error

    return GcsClient(address=address)


def alive_nodes(client, ip):
    """The ALIVE nodes of Ray whose address is `ip`."""
    from ray.core.generated import gcs_pb2  # pylint: disable=import-error

    alive = gcs_pb2.GcsNodeInfo.ALIVE
    return [info for info in client.get_all_node_info(timeout=10).values()
            if info.node_manager_address == ip and info.state == alive]


def describe(info):
    """A node as the modules return it."""
    return {
        "node_id": info.node_id.hex(),
        "ip": info.node_manager_address,
        "is_head": bool(info.is_head_node),
        "resources": {k: v for k, v in info.resources_total.items() if not k.startswith("node:")},
        "labels": dict(info.labels),
    }
