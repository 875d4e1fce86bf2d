"""Ports of the cluster reached over SSH: a local port forwarded to a machine's port (the
services Ray binds to the machine's private address), and the `dashboard` command."""

from __future__ import annotations

import argparse
import contextlib
import select
import socket
import sys
import threading
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


@contextlib.contextmanager
def forward(connection: Connection, local_port: int, remote_host: str, remote_port: int):
    """localhost:local_port -> remote_host:remote_port as the machine reaches it.

    Like `ssh -L`: a connection the far end refuses or resets ends that connection alone,
    with a line on stderr; the forward stays up until the block ends. (fabric's
    forward_local re-raises any such error when it closes, which turned one reset browser
    connection into a failed command, and could wait on a stuck connection for ever.)"""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", local_port))
    except OSError:
        listener.close()
        raise errors.CliError(f"local port {local_port} is in use: choose another with --port",
                              errors.USAGE) from None
    listener.listen(16)
    stop = threading.Event()
    accepting = threading.Thread(
        target=_accept, args=(listener, connection.transport, (remote_host, remote_port), stop),
        name=f"forward-{local_port}", daemon=True)
    accepting.start()
    try:
        yield f"http://127.0.0.1:{local_port}"
    finally:
        stop.set()
        listener.close()
        accepting.join(timeout=2)


_POLL_S = 0.5


def _accept(listener: socket.socket, transport, target: tuple[str, int],
            stop: threading.Event) -> None:
    listener.settimeout(_POLL_S)
    while not stop.is_set():
        try:
            client, origin = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return  # the listener was closed: the forward ends
        try:
            channel = transport.open_channel("direct-tcpip", target, origin, timeout=15)
        except Exception as err:  # any failure ends this connection alone
            cause = str(err) or type(err).__name__
            print(f"port forward to {target[0]}:{target[1]}: open failed: {cause}",
                  file=sys.stderr, flush=True)
            client.close()
            continue
        threading.Thread(target=_pump, args=(client, channel, stop), daemon=True).start()


def _pump(client: socket.socket, channel, stop: threading.Event) -> None:
    """Copy both ways until either side closes (or resets) or the forward ends."""
    try:
        while not stop.is_set():
            ready, _, _ = select.select([client, channel], [], [], _POLL_S)
            for source, sink in ((client, channel), (channel, client)):
                if source in ready:
                    data = source.recv(32768)
                    if not data:
                        return
                    sink.sendall(data)
    except OSError:
        return  # a reset on either side ends this connection, as with ssh -L
    finally:
        channel.close()
        client.close()


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
