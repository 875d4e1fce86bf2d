"""The command line: every command, its options and an example (`onprem-ray CMD --help`)."""

from __future__ import annotations

import argparse
import textwrap

from onprem_ray_cli import (
    __version__,
    errors,
    info,
    jobs,
    lifecycle,
    shell,
    submit,
    transfer,
    tunnel,
)

CLUSTER_HELP = ("the cluster file: a Ray cluster YAML (provider: type: local), or an inventory "
                "source (plugin: onprem.ray.cluster)")


def _exit_codes() -> str:
    return "exit codes:\n" + "\n".join(f"  {code:<4} {meaning}"
                                       for code, meaning in errors.EXIT_CODES.items())


def _command(commands, name: str, handler, summary: str, example: str,
             cluster: bool = True) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        name, help=summary, description=summary,
        epilog="example:\n" + textwrap.indent(example.strip(), "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    if cluster:
        parser.add_argument("cluster", metavar="CLUSTER", help=CLUSTER_HELP)
    parser.set_defaults(handler=handler)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onprem-ray",
        description="A Ray cluster on machines of your own: set up, used and watched from "
                    "one cluster file.",
        epilog="example:\n  onprem-ray up cluster.yaml && onprem-ray submit cluster.yaml "
               "job.py\n\n" + _exit_codes(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _lifecycle_commands(commands)
    _remote_commands(commands)
    _file_commands(commands)
    _info_commands(commands)
    return parser


def _extra_vars(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-e", "--extra-vars", dest="extra_vars", action="append", default=[],
                        metavar="KEY=VALUE", help="a variable for the playbook (repeatable), "
                        "e.g. ray_wheelhouse_dir=/srv/wheels")


def _lifecycle_commands(commands) -> None:
    up = _command(
        commands, "up", lifecycle.up,
        "create or update the cluster (onprem.ray.up): Ray under systemd on the head and "
        "the workers min_workers asks for, the agent on the head; Ray is restarted only where "
        "its settings changed",
        "onprem-ray up cluster.yaml\n"
        "onprem-ray up --min-workers 0 --max-workers 4 cluster.yaml\n"
        "onprem-ray up --restart-only --yes cluster.yaml")
    up.add_argument("--restart-only", action="store_true",
                    help="skip installing, setup commands and file sync; apply Ray's and the "
                         "agent's settings, then restart Ray where it runs (asks first)")
    up.add_argument("--min-workers", type=int, metavar="N",
                    help="the cluster's min_workers for this cluster (the agent follows it)")
    up.add_argument("--max-workers", type=int, metavar="N",
                    help="the cluster's max_workers for this cluster (the agent follows it)")
    up.add_argument("--no-agent", action="store_true",
                    help="do not run the autoscaler agent on the head")
    up.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    _extra_vars(up)

    down = _command(
        commands, "down", lifecycle.down,
        "stop Ray and the agent (onprem.ray.down) on every machine, or only on the workers; "
        "asks first",
        "onprem-ray down --yes cluster.yaml\nonprem-ray down --workers-only cluster.yaml")
    down.add_argument("--workers-only", action="store_true", help="leave the head running")
    down.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    _extra_vars(down)


def _info_commands(commands) -> None:
    _command(commands, "get-head-ip", info.get_head_ip, "print the head's address",
             "onprem-ray get-head-ip cluster.yaml")

    workers = _command(
        commands, "get-worker-ips", info.get_worker_ips,
        "print each worker's address, node type and lifecycle state (from the head's agent)",
        "onprem-ray get-worker-ips cluster.yaml\n"
        "onprem-ray get-worker-ips --no-state cluster.yaml   # addresses only, no SSH")
    workers.add_argument("--json", action="store_true", help="as JSON")
    workers.add_argument("--no-state", action="store_true",
                         help="do not ask the head: the addresses only, one per line")

    status = _command(
        commands, "status", info.status,
        "the agent's status: every machine's state, runs, pending demand, next actions",
        "onprem-ray status cluster.yaml\nonprem-ray status --json cluster.yaml | jq .machines")
    status.add_argument("--json", action="store_true", help="as JSON")
    status.add_argument("--no-decide", action="store_true",
                        help="do not ask Ray: the agent's last iteration only")

    monitor = _command(commands, "monitor", info.monitor,
                       "follow the agent's log (its journal on the head) until Ctrl-C",
                       "onprem-ray monitor cluster.yaml")
    monitor.add_argument("--lines", type=int, default=50, help="earlier lines shown first")
    monitor.add_argument("--no-follow", action="store_true", help="print them and end")


def _node_options(parser: argparse.ArgumentParser, all_nodes: bool = True) -> None:
    parser.add_argument("--node", metavar="IP", help="this machine of the cluster, not the head")
    if all_nodes:
        parser.add_argument("--all-nodes", action="store_true",
                            help="every machine of the cluster file, the head first")


def _remote_commands(commands) -> None:
    exec_ = _command(
        commands, "exec", shell.exec_command,
        "run a shell command on the head (or --node, --all-nodes) in a login shell, with "
        "RAY_ADDRESS set; exits with the command's exit code",
        "onprem-ray exec cluster.yaml 'ray status'\n"
        "onprem-ray exec --all-nodes cluster.yaml -- df -h /tmp\n"
        "onprem-ray exec --tmux cluster.yaml 'python long_job.py'   # then: attach --tmux")
    _node_options(exec_)
    exec_.add_argument("--tmux", action="store_true",
                       help="run it in a new detached tmux session (it outlives the SSH "
                            "connection)")
    exec_.add_argument("--screen", action="store_true",
                       help="run it in a new detached screen session")
    exec_.add_argument("--port-forward", type=tunnel.port_pair, action="append", default=[],
                       metavar="PORT", help="forward local PORT to the machine's PORT (on its "
                       "private address) while the command runs; LOCAL:REMOTE for another "
                       "local port (repeatable)")
    exec_.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD",
                       help="the shell command (one argument, or words after --)")

    attach = _command(
        commands, "attach", shell.attach,
        "an interactive login shell on the head (or --node); exits with the shell's code",
        "onprem-ray attach cluster.yaml\nonprem-ray attach --tmux cluster.yaml")
    _node_options(attach, all_nodes=False)
    attach.add_argument("--tmux", action="store_true",
                        help="attach to the tmux session (made if there is none)")

    submit_ = _command(
        commands, "submit", submit.submit,
        "copy a Python script to the head and run it there with Ray's address and the "
        "cluster's token, as Ray's user; streams its output, exits with its exit code",
        "onprem-ray submit cluster.yaml examples/autoscale_job.py --tasks 8")
    submit_.add_argument("script", metavar="SCRIPT.py")
    submit_.add_argument("script_args", nargs=argparse.REMAINDER, metavar="ARGS",
                         help="the script's own arguments")

    dashboard = _command(
        commands, "dashboard", tunnel.dashboard,
        "forward the head's Ray dashboard to a local port and print its URL, until Ctrl-C",
        "onprem-ray dashboard cluster.yaml\nonprem-ray dashboard --port 9265 cluster.yaml")
    dashboard.add_argument("--port", type=int, default=tunnel.DASHBOARD_PORT,
                           help="the local port (default: %(default)s)")

    job = commands.add_parser(
        "job", help="Ray jobs through the Jobs API",
        description="Ray jobs through the head's Jobs API.",
        epilog="example:\n  onprem-ray job submit cluster.yaml -- python job.py",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    job_commands = job.add_subparsers(dest="job_command", required=True, metavar="COMMAND")
    job_submit = _command(
        job_commands, "submit", jobs.job_submit,
        "submit CMD as a Ray job through the Jobs API (the head's dashboard over an SSH "
        "tunnel, with the cluster's token), follow its logs; exit 0 if it SUCCEEDED, 1 if it "
        "FAILED or was STOPPED",
        "onprem-ray job submit cluster.yaml -- python -c 'import ray; ray.init(); "
        "print(ray.cluster_resources())'")
    job_submit.add_argument("--no-wait", action="store_true",
                            help="print the submission id and return")
    job_submit.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD")


def _file_commands(commands) -> None:
    up = _command(
        commands, "rsync-up", transfer.rsync_up,
        "copy local files to the head (or --node, --all-nodes) with rsync over SSH; remote "
        "paths are relative to the login user's home",
        "onprem-ray rsync-up cluster.yaml ./data/ data/\n"
        "onprem-ray rsync-up --all-nodes cluster.yaml model.bin /tmp/model.bin")
    down = _command(
        commands, "rsync-down", transfer.rsync_down,
        "copy files from the head (or --node; --all-nodes: into TARGET/<address>/) with "
        "rsync over SSH",
        "onprem-ray rsync-down cluster.yaml results/ ./results/\n"
        "onprem-ray rsync-down --all-nodes cluster.yaml /tmp/ray/session_latest/logs ./logs")
    for parser in (up, down):
        _node_options(parser)
        parser.add_argument("source", metavar="SOURCE")
        parser.add_argument("target", metavar="TARGET")
