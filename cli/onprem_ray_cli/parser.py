"""The command line: every command, its options and an example (`onprem-ray CMD --help`)."""

from __future__ import annotations

import argparse
import textwrap

from onprem_ray_cli import __version__, errors, info, lifecycle

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
