"""`exec` and `attach`: a command or an interactive shell on the cluster's machines, over
verified SSH, with the remote exit code passed through."""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys

from onprem_ray_cli import errors, nodes, resolve, ssh, tunnel

RAY_PORT = 6379  # roles/ray: ray_port
SESSION = "onprem-ray"  # the tmux / screen session of exec and attach


def ray_address(cluster) -> str:
    return f"{cluster.head_ip}:{RAY_PORT}"


def wrap(command: str, *, tmux: bool = False, screen: bool = False, host: str = "") -> str:
    """What runs on the machine: a login shell (Ray's settings from /etc/profile.d), or a
    detached tmux / screen session that keeps the command running after we leave."""
    if tmux and screen:
        raise errors.CliError("--tmux and --screen exclude each other", errors.USAGE)
    if tmux:
        inner = f"{command}; exec bash"
        return (f"command -v tmux >/dev/null || {{ echo 'tmux is not installed on {host}' >&2; "
                f"exit 127; }}; tmux new-session -d -s {SESSION}-$$ bash -lc "
                f"{shlex.quote(inner)} && echo \"started in tmux session {SESSION}-$$\"")
    if screen:
        inner = f"{command}; exec bash"
        return (f"command -v screen >/dev/null || {{ echo 'screen is not installed on {host}' >&2; "
                f"exit 127; }}; screen -L -dmS {SESSION}-$$ bash -lc {shlex.quote(inner)} "
                f"&& echo \"started in screen session {SESSION}-$$\"")
    return ssh.login_shell(command)


def exec_command(args: argparse.Namespace) -> int:
    target = resolve.load(args.cluster)
    cluster = target.cluster
    hosts = nodes.select(cluster, args.node, args.all_nodes)
    words = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not words:
        raise errors.CliError("no command: onprem-ray exec CLUSTER CMD", errors.USAGE)
    command = f"export RAY_ADDRESS={ray_address(cluster)}; {' '.join(words)}"
    interactive = sys.stdin.isatty() and not (args.tmux or args.screen)
    codes = []
    for host in hosts:
        if len(hosts) > 1:
            print(f"== {ssh.role_of(cluster, host)} {host}", flush=True)
        with ssh.connect(cluster, host) as connection, contextlib.ExitStack() as forwards:
            for local, remote_port in args.port_forward:
                forwards.enter_context(tunnel.forward(connection, local, host, remote_port))
            remote = wrap(command, tmux=args.tmux, screen=args.screen, host=host)
            if not interactive:
                forwards.enter_context(ssh.interrupt_closes(connection))
            done = connection.run(remote, warn=True, pty=interactive,
                                  in_stream=None if interactive else False)
        codes.append(done.exited)
        if done.exited != 0 and len(hosts) > 1:
            print(f"== {host}: exit code {done.exited}", file=sys.stderr)
    return next((code for code in codes if code != 0), errors.OK)


def attach(args: argparse.Namespace) -> int:
    """An interactive login shell (or the tmux session) on the head or --node."""
    target = resolve.load(args.cluster)
    cluster = target.cluster
    (host,) = nodes.select(cluster, args.node)
    with ssh.connect(cluster, host) as connection:
        if args.tmux:
            done = connection.run(
                f"command -v tmux >/dev/null || {{ echo 'tmux is not installed on {host}' >&2;"
                f" exit 127; }}; tmux attach || tmux new-session -s {SESSION}",
                pty=True, warn=True)
        else:
            done = connection.run("exec bash -l", pty=True, warn=True)
    return done.exited
