"""Command line of the local test pool.

    python -m tests.pool up [NAME] [--machines N] [--subnet CIDR] [--suites S[,S...]]
    python -m tests.pool down [NAME | --all]
    python -m tests.pool list
    python -m tests.pool images [--suites S[,S...]]
                                       build (or find cached) images and the wheelhouse
"""

from __future__ import annotations

import argparse
import sys

from tests.pool import pool as pools
from tests.pool.images import SUITE, SUITES, ensure_images
from tests.pool.wheelhouse import ensure_wheelhouse


def _suites(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.pool", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="create a pool")
    up.add_argument("name", nargs="?", default="demo")
    up.add_argument("--machines", type=int, default=4, help="head + workers (default 4)")
    up.add_argument("--subnet", help="IPv4 CIDR for the pool's network "
                    "(default: a free /24 in 10.213.0.0/16)")
    suites_help = (f"Debian release of every machine, or of each, head first, comma-separated "
                   f"(one of {', '.join(SUITES)}; default {SUITE})")
    up.add_argument("--suites", type=_suites, help=suites_help)
    down = sub.add_parser("down", help="remove a pool and everything it made")
    down.add_argument("name", nargs="?", default="demo")
    down.add_argument("--all", action="store_true", help="remove every pool")
    sub.add_parser("list", help="list pools")
    images = sub.add_parser("images", help="build or find the images and the wheelhouse")
    images.add_argument("--suites", type=_suites, default=[SUITE], help=suites_help)
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            print(pools.describe(pools.create(args.name, args.machines, args.subnet,
                                              args.suites)))
        elif args.command == "down":
            removed = pools.remove(None if args.all else args.name)
            print("\n".join(f"removed {r}" for r in removed) or "nothing to remove")
        elif args.command == "list":
            for name in pools.names():
                pool = pools.load(name)
                print(pools.describe(pool) if pool else f"pool {name}: no state directory")
        elif args.command == "images":
            for suite in dict.fromkeys(args.suites):
                print(ensure_images(suite))
            print(ensure_wheelhouse(suites=tuple(args.suites)))
    except pools.PoolError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
