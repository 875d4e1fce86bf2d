"""`rsync-up` / `rsync-down`: files to or from the cluster's machines with rsync over SSH,
with the cluster file's user and key, host keys verified."""

from __future__ import annotations

import argparse
import shlex
import subprocess
from pathlib import Path

from onprem_ray_cli import errors, nodes, resolve, ssh


def rsync_argv(cluster, host: str, source: str, destination: str, *, up: bool) -> list[str]:
    remote = f"{ssh.address_of(cluster, host)}:"
    # rsync -s: the remote path is sent as is, never split or expanded by the remote shell.
    argv = ["rsync", "-az", "-s", "-e", shlex.join(ssh.ssh_argv(cluster))]
    return argv + ([source, remote + destination] if up else [remote + source, destination])


def _run(argv: list[str], host: str) -> int:
    try:
        done = subprocess.run(argv, check=False)
    except FileNotFoundError:
        raise errors.CliError("rsync is not installed on this machine", errors.TOOL_FAILED) \
            from None
    if done.returncode != 0:
        raise errors.CliError(f"{host}: rsync exited {done.returncode} (see its message above)",
                              errors.TOOL_FAILED)
    return errors.OK


def rsync_up(args: argparse.Namespace) -> int:
    cluster = resolve.load(args.cluster).cluster
    for host in nodes.select(cluster, args.node, args.all_nodes):
        _run(rsync_argv(cluster, host, args.source, args.target, up=True), host)
    return errors.OK


def rsync_down(args: argparse.Namespace) -> int:
    """From one machine into TARGET; with --all-nodes, into TARGET/<address>/ each."""
    cluster = resolve.load(args.cluster).cluster
    hosts = nodes.select(cluster, args.node, args.all_nodes)
    for host in hosts:
        destination = args.target
        if args.all_nodes:
            Path(args.target, host).mkdir(parents=True, exist_ok=True)
            destination = str(Path(args.target, host)) + "/"
        _run(rsync_argv(cluster, host, args.source, destination, up=False), host)
    return errors.OK
