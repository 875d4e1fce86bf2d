"""Command line of the agent."""

from __future__ import annotations

import argparse
import json
import sys

from onprem_ray_agent import __version__


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onprem-ray-agent")
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    plan = commands.add_parser(
        "plan", help="print the decision for a recorded situation (no cluster needed)",
        description="Decide for the situation in SNAPSHOT.json (config, machine states, "
                    "demand, now; see agent/docs/plan-format.md) and print the decision as "
                    "JSON: actions with their reasons, infeasible demand, notes.")
    plan.add_argument("snapshot", metavar="SNAPSHOT.json")
    plan.add_argument("--compact", action="store_true", help="one line of JSON")
    plan.set_defaults(handler=_plan)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        print("onprem-ray-agent: the control loop is not built yet", file=sys.stderr)
        return 2
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
