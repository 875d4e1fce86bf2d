"""Every command has --help with an example; the exit codes are listed in --help and in
docs/cli.md."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from onprem_ray_cli import errors, tunnel
from onprem_ray_cli.parser import build_parser

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def all_parsers(parser: argparse.ArgumentParser, prefix: str = ""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub
                yield from all_parsers(sub, f"{prefix}{name} ")


def test_every_command_has_help_with_an_example():
    commands = dict(all_parsers(build_parser()))
    assert {"up", "down", "exec", "attach", "submit", "job", "job submit", "rsync-up",
            "rsync-down", "dashboard", "get-head-ip", "get-worker-ips", "status",
            "monitor"} == set(commands)
    for name, parser in commands.items():
        text = parser.format_help()
        assert "example:\n  onprem-ray " + name.split()[0] in text, name


def test_the_exit_codes_are_in_the_help_and_the_docs():
    text = build_parser().format_help()
    docs = DOCS.read_text()
    assert len(errors.EXIT_CODES) >= 10
    for code in errors.EXIT_CODES:
        assert re.search(rf"^  {code}\s", text, re.MULTILINE), code
        assert f"| {code} |" in docs, code


def test_port_forward_takes_a_port_or_a_pair():
    assert tunnel.port_pair("8265") == (8265, 8265)
    assert tunnel.port_pair("18265:8265") == (18265, 8265)
    for bad in ("x", "0", "1:70000", "a:1"):
        with pytest.raises(argparse.ArgumentTypeError):
            tunnel.port_pair(bad)


def test_exec_takes_the_command_after_the_cluster():
    args = build_parser().parse_args(["exec", "--node", "10.0.0.2", "c.yaml", "--", "ls", "-l"])
    assert (args.cluster, args.node, args.cmd[-2:]) == ("c.yaml", "10.0.0.2", ["ls", "-l"])
    args = build_parser().parse_args(["job", "submit", "c.yaml", "--", "python", "-V"])
    assert args.cmd[-2:] == ["python", "-V"] and args.cmd[:-2] in ([], ["--"])
    args = build_parser().parse_args(["submit", "c.yaml", "job.py", "--n", "3"])
    assert (args.script, args.script_args) == ("job.py", ["--n", "3"])
