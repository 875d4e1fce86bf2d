"""Ports of the cluster reached over SSH: a local port forwarded to a machine's port (the
services Ray binds to the machine's private address), and the `dashboard` command."""

from __future__ import annotations

import argparse
import contextlib
import socket
import time

from fabric import Connection

from onprem_ray_cli import errors, resolve, ssh

DASHBOARD_PORT = 8265  # roles/ray: ray_dashboard_port


def port_pair(text: str) -> tuple[int, int]:
    """`PORT` (the same port here and there) or `LOCAL:REMOTE`, for --port-forward."""
    local, _, remote = text.partition(":")
    try:
        ports = (int(local), int(remote or local))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use PORT or LOCAL:REMOTE") from None
    if not all(0 < port < 65536 for port in ports):
        raise argparse.ArgumentTypeError(f"{text!r}: ports are 1 to 65535")
    return ports


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def check_free(port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise errors.CliError(f"local port {port} is in use: choose another with --port",
                                  errors.USAGE) from None


@contextlib.contextmanager
def forward(connection: Connection, local_port: int, remote_host: str, remote_port: int):
    """localhost:local_port -> remote_host:remote_port as the machine reaches it."""
    check_free(local_port)
    with connection.forward_local(local_port, remote_port=remote_port,
                                  remote_host=remote_host, local_host="127.0.0.1"):
        yield f"http://127.0.0.1:{local_port}"


def dashboard(args: argparse.Namespace) -> int:
    cluster = resolve.load(args.cluster).cluster
    with ssh.connect(cluster, cluster.head_ip) as connection, \
            forward(connection, args.port, cluster.head_ip, DASHBOARD_PORT) as url:
        print(f"Ray's dashboard of {cluster.cluster_name}: {url}  (Ctrl-C to stop)", flush=True)
        print("It asks for the cluster's token: onprem-ray exec CLUSTER 'cat ~/.ray/auth_token'",
              flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while connection.is_connected:
                time.sleep(1)
    return errors.OK
