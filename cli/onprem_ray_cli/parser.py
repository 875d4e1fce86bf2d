"""The command line: every command, its options and an example (`onprem-ray CMD --help`)."""

from __future__ import annotations

import argparse
import textwrap

from onprem_ray_cli import __version__, errors, info

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
    _info_commands(commands)
    return parser


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
