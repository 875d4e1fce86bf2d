"""`up` and `down`: the collection's playbooks onprem.ray.up / onprem.ray.down on the cluster,
with live progress, a table of hosts x outcome, and each failure's host, step and output."""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor

from onprem_ray_cli import errors, overrides, resolve, runs, ssh
from onprem_ray_cli.progress import render_failures, render_table

RAY_UNIT = "onprem-ray.service"  # roles/ray: ray_service_name
RESTART_TAGS = "service,agent"  # the steps --restart-only runs (no install, commands, sync)


def confirm(question: str, yes: bool) -> None:
    """Go on with --yes or a `y` typed; without a terminal to ask, --yes is required."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise errors.CliError(f"{question} Pass --yes to confirm (no terminal to ask on).",
                              errors.USAGE)
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise errors.CliError("not confirmed: nothing was done", errors.FAILED)


def extra_vars(pairs: list[str]) -> dict[str, str]:
    """`-e KEY=VALUE` options, as ansible-playbook takes them (values are strings)."""
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise errors.CliError(f"-e {pair!r}: use KEY=VALUE", errors.USAGE)
        result[key] = value
    return result


def up(args: argparse.Namespace) -> int:
    target = resolve.load(args.cluster)
    if args.min_workers is not None or args.max_workers is not None:
        inventory = overrides.write_inventory(target, args.min_workers, args.max_workers)
    else:
        inventory = resolve.inventory_source(target)
    variables = extra_vars(args.extra_vars)
    if args.no_agent:
        variables["head_agent_enabled"] = "false"
    if args.restart_only:
        confirm(f"Restart Ray on every machine of {target.cluster.cluster_name} where it runs?",
                args.yes)
    outcome = runs.run_playbook(target.work_dir, "onprem.ray.up", inventory,
                                extravars=variables,
                                tags=RESTART_TAGS if args.restart_only else None)
    code = report(target, outcome)
    if code == errors.OK and args.restart_only:
        return restart_ray(target)
    return code


def down(args: argparse.Namespace) -> int:
    target = resolve.load(args.cluster)
    what = "the workers" if args.workers_only else "every machine (head and workers)"
    confirm(f"Stop Ray on {what} of {target.cluster.cluster_name}?", args.yes)
    # The head's play stops the agent (it would start the workers again) and, with
    # ray_down_workers_only, leaves Ray running there.
    extravars = extra_vars(args.extra_vars)
    if args.workers_only:
        extravars["ray_down_workers_only"] = "true"
    outcome = runs.run_playbook(target.work_dir, "onprem.ray.down",
                                resolve.inventory_source(target), extravars=extravars)
    return report(target, outcome)


def report(target: resolve.Target, outcome: runs.RunOutcome) -> int:
    cluster = target.cluster
    roles = {host: ssh.role_of(cluster, host) for host in cluster.hosts}
    print()
    print(render_table(outcome.progress, roles), end="")
    failures = render_failures(outcome.progress)
    if failures:
        print(failures, end="", file=sys.stderr)
    elif not outcome.ok:  # failed before any host (the inventory, the playbook itself)
        print(f"the run ended {outcome.status} (rc {outcome.rc}); the end of its log:\n"
              f"{runs.log_tail(outcome.log)}", file=sys.stderr)
    print(f"Ansible's full log: {outcome.log}")
    return errors.OK if outcome.ok else errors.FAILED


def restart_ray(target: resolve.Target) -> int:
    """Ray restarted where it runs: the head first, then the workers (which rejoin it)."""
    cluster = target.cluster

    def restart(host: str) -> tuple[bool, str]:
        try:
            with ssh.connect(cluster, host) as connection:
                done = connection.run(f"sudo -n systemctl try-restart {RAY_UNIT}", hide=True,
                                      warn=True, in_stream=False)
        except errors.CliError as err:
            return False, str(err)
        if done.exited != 0:
            return False, f"{host}: restarting Ray failed: {done.stderr.strip()}"
        return True, f"{host}: Ray restarted (where it was running)"

    results = [restart(cluster.head_ip)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        results += pool.map(restart, cluster.worker_ips)
    for ok, line in results:
        print(line, file=sys.stdout if ok else sys.stderr)
    return errors.OK if all(ok for ok, _ in results) else errors.FAILED
