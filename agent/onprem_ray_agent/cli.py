"""Command line of the agent."""

from __future__ import annotations

import argparse
import sys

from onprem_ray_agent import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="onprem-ray-agent")
    parser.add_argument("--version", action="version", version=__version__)
    parser.parse_args(argv)
    print("onprem-ray-agent: the control loop is not built yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
