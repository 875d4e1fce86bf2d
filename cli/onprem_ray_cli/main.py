"""Entry point of `onprem-ray`: parse, run the command, turn its errors into exit codes."""

from __future__ import annotations

import sys

from onprem_ray_cli import errors
from onprem_ray_cli.parser import build_parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except errors.CliError as err:
        print(f"onprem-ray {args.command}: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        print(f"onprem-ray {args.command}: interrupted", file=sys.stderr)
        return errors.INTERRUPTED
