"""get-head-ip, get-worker-ips, status, monitor: what the cluster file and the agent say."""

from __future__ import annotations

import argparse
import json
import sys

from onprem_ray_cli import agent, errors, resolve, ssh


def get_head_ip(args: argparse.Namespace) -> int:
    print(resolve.load(args.cluster).cluster.head_ip)
    return errors.OK


def get_worker_ips(args: argparse.Namespace) -> int:
    """Every worker of the file, its node type, and its lifecycle state from the agent when
    the head answers (else `unknown`, with the reason on stderr: the list is still right)."""
    cluster = resolve.load(args.cluster).cluster
    states: dict[str, str] = {}
    if not args.no_state:
        try:
            with ssh.connect(cluster, cluster.head_ip) as connection:
                states = agent.lifecycle_states(connection)
        except errors.CliError as err:
            print(f"onprem-ray get-worker-ips: lifecycle states unknown: {err}", file=sys.stderr)
    rows = [{"ip": ip, "node_type": cluster.node_type_of(ip).name,
             "state": states.get(ip, "unknown")} for ip in cluster.worker_ips]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif args.no_state:
        print("\n".join(row["ip"] for row in rows))
    else:
        print(worker_table(rows), end="")
    return errors.OK


def worker_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    widths = [max(len(row[key]) for row in rows) for key in ("ip", "node_type")]
    return "".join(f"{row['ip']:<{widths[0]}}  {row['node_type']:<{widths[1]}}  "
                   f"{row['state']}\n" for row in rows)


def status(args: argparse.Namespace) -> int:
    cluster = resolve.load(args.cluster).cluster
    with ssh.connect(cluster, cluster.head_ip) as connection:
        sys.stdout.write(agent.run_status(connection, as_json=args.json,
                                          decide=not args.no_decide))
    return errors.OK


def monitor(args: argparse.Namespace) -> int:
    """The agent's journal on the head, followed until Ctrl-C (or its last lines)."""
    cluster = resolve.load(args.cluster).cluster
    with ssh.connect(cluster, cluster.head_ip) as connection, \
            ssh.interrupt_closes(connection):
        done = connection.run(agent.journal_command(follow=not args.no_follow,
                                                    lines=args.lines),
                              warn=True, pty=False, in_stream=False)
    return done.exited
