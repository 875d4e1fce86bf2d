"""Command line of the agent: `run` (the default), `status`, `plan`, `history`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from onprem_ray_agent import DEFAULT_METRICS_PORT as DEFAULT_PORT
from onprem_ray_agent import __version__

COMMANDS = ("run", "status", "plan", "history")


def _plan(args: argparse.Namespace) -> int:
    from onprem_ray_agent.codec import FormatError
    from onprem_ray_agent.plan import plan_file

    try:
        decision = plan_file(args.snapshot)
    except FormatError as err:
        print(f"onprem-ray-agent plan: {err}", file=sys.stderr)
        return 2
    json.dump(decision, sys.stdout, indent=None if args.compact else 2)
    sys.stdout.write("\n")
    return 0


def _run(args: argparse.Namespace) -> int:
    from onprem_ray_agent.service import Options, run

    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    return run(Options(
        cluster_file=Path(args.cluster_file), state_dir=Path(args.state_dir),
        gcs_address=args.gcs_address, interval_s=args.interval, once=args.once,
        settings_file=Path(args.settings) if args.settings else None,
        dry_run=args.dry_run, metrics_address=args.metrics_address,
        metrics_port=args.metrics_port, rebuild_state=args.rebuild_state))


def _status(args: argparse.Namespace) -> int:
    from onprem_ray_agent.adapters.ray_state import GcsRayState
    from onprem_ray_agent.claims import ClaimBox
    from onprem_ray_agent.config import ConfigError, load_config
    from onprem_ray_agent.loop import Agent
    from onprem_ray_agent.settings import SettingsError, load_settings
    from onprem_ray_agent.status import collect_status, read_status_file, render
    from onprem_ray_agent.store import StateStore, StoreError

    state_dir = Path(args.state_dir)
    try:
        store = StateStore.open_read_only(state_dir / "state.db")
    except StoreError as err:
        print(f"onprem-ray-agent status: {err}", file=sys.stderr)
        return 2
    try:
        # Decide afresh with the running agent's cluster file and GCS unless told others.
        last = read_status_file(state_dir) or {}
        running_as = last.get("agent") or {}
        cluster_file = args.cluster_file or running_as.get("cluster_file")
        gcs_address = args.gcs_address or running_as.get("gcs_address")
        fresh = None
        if cluster_file and gcs_address and not args.no_decide:
            settings_file = running_as.get("settings_file")
            try:
                decision = load_settings(settings_file).decision if settings_file else {}
                loaded = load_config(cluster_file, **decision)
            except (ConfigError, SettingsError) as err:
                print(f"onprem-ray-agent status: {err}", file=sys.stderr)
                return 2
            # The running agent's counts of how long each add run has been unneeded, and each
            # active machine absent from Ray's node list.
            last_decision = last.get("decision") or {}
            agent = Agent(loaded.config, store, GcsRayState(gcs_address), None, dry_run=True,
                          unneeded_since=_times(last_decision.get("unneeded_since")),
                          absent_since=_times(last_decision.get("absent_since")),
                          claims=ClaimBox(state_dir))
            fresh = agent.iterate(time.time())
        status = collect_status(store, state_dir, fresh)
    finally:
        store.close()
    if args.json:
        json.dump(status, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render(status, time.time()))
    return 0


def _times(value: object) -> dict[str, float]:
    """A status file's key -> time map (`unneeded_since`, `absent_since`); anything else: {}."""
    if not isinstance(value, dict):
        return {}
    return {str(key): float(at) for key, at in value.items() if isinstance(at, int | float)}


def _history(args: argparse.Namespace) -> int:
    from onprem_ray_agent.history import HistoryError, export

    try:
        summary = export(Path(args.state_dir), Path(args.export))
    except HistoryError as err:
        print(f"onprem-ray-agent history: {err}", file=sys.stderr)
        return 2
    print(f"{args.export}: {summary.records} records, {summary.tasks} tasks over "
          f"{summary.duration_s / 3600:.1f} h ({summary.waited} waited; "
          f"{summary.left_pending} bundles still pending at the end left out)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onprem-ray-agent",
        description="Autoscaler agent of onprem.ray. Without a command: run.")
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run", help="watch Ray's demand and add or retire machines of the pool",
        description="The control loop: every --interval seconds, read Ray's demand from the "
                    "head's GCS, decide, and run add_workers / retire_workers.")
    run.add_argument("--cluster-file", required=True, help="the cluster file (inventory)")
    run.add_argument("--state-dir", required=True, help="where the state store lives")
    run.add_argument("--gcs-address", required=True, metavar="HOST:PORT",
                     help="the head's GCS, e.g. 10.0.0.1:6379")
    run.add_argument("--settings", metavar="FILE",
                     help="the agent's settings file (interval_s, provision_timeout_s, "
                          "backoff, quarantine, drain deadline, concurrent launches, join "
                          "cancel; see "
                          "docs/agent.md), read again on SIGHUP")
    run.add_argument("--interval", type=float, metavar="SECONDS",
                     help="seconds between iterations, instead of the settings file's "
                          "(default 5)")
    run.add_argument("--once", action="store_true",
                     help="one iteration, wait for the playbooks it starts, then exit")
    run.add_argument("--dry-run", action="store_true",
                     help="decide and print the actions with their reasons; act on nothing "
                          "and write nothing")
    run.add_argument("--metrics-address", metavar="ADDRESS",
                     help="address of the metrics endpoint (default: the head's address "
                          "from the cluster file)")
    run.add_argument("--metrics-port", type=int, default=DEFAULT_PORT, metavar="PORT",
                     help=f"port of the metrics endpoint, 0 for none (default {DEFAULT_PORT})")
    run.add_argument("--rebuild-state", action="store_true",
                     help="replace a damaged state store with one rebuilt from Ray and the "
                          "cluster file (workers ALIVE in Ray active, the others spares; "
                          "backoffs and quarantines are forgotten), then exit; the agent "
                          "must be stopped")
    run.add_argument("--log-level", default="INFO",
                     choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.set_defaults(handler=_run)

    status = commands.add_parser(
        "status", help="machines, runs, pending demand and the next actions",
        description="Every machine's state, since when, why and its last error; the "
                    "playbook runs; Ray's pending demand and what the agent will do next, "
                    "decided afresh (acting on nothing) with the running agent's cluster "
                    "file and GCS address, or the ones given; without Ray, the agent's "
                    "last iteration.")
    status.add_argument("--state-dir", required=True)
    status.add_argument("--cluster-file", help="default: the running agent's")
    status.add_argument("--gcs-address", metavar="HOST:PORT", help="default: the running "
                        "agent's")
    status.add_argument("--json", action="store_true", help="the same, as JSON")
    status.add_argument("--no-decide", action="store_true",
                        help="do not ask Ray: show the agent's last iteration only")
    status.set_defaults(handler=_status)

    plan = commands.add_parser(
        "plan", help="print the decision for a recorded situation (no cluster needed)",
        description="Decide for the situation in SNAPSHOT.json (config, machine states, "
                    "demand, now; see agent/docs/plan-format.md) and print the decision as "
                    "JSON: actions with their reasons, infeasible demand, notes.")
    plan.add_argument("snapshot", metavar="SNAPSHOT.json")
    plan.add_argument("--compact", action="store_true", help="one line of JSON")
    plan.set_defaults(handler=_plan)

    history = commands.add_parser(
        "history", help="export the recorded demand as a trace for bench/simulate.py",
        description="Write the demand the agent recorded in the state directory "
                    "(history.jsonl) as a trace that bench/simulate.py --trace replays; "
                    "docs/scaling.md describes both formats.")
    history.add_argument("--state-dir", required=True)
    history.add_argument("--export", required=True, metavar="FILE", help="the trace to write")
    history.set_defaults(handler=_history)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The systemd unit calls the agent with options only: that is `run`.
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv.insert(0, "run")
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
