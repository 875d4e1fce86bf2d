"""The agent on the head, asked over SSH: its status (machines' lifecycle states, runs,
demand) and its journal."""

from __future__ import annotations

import json
import shlex
from typing import Any

from fabric import Connection

from onprem_ray_cli import errors

# The head role's defaults (roles/head: head__agent_command, head_agent_state_dir,
# head_agent_service_name).
AGENT_COMMAND = "/usr/local/bin/onprem-ray-agent"
STATE_DIR = "/var/lib/onprem-ray/agent"
SERVICE = "onprem-ray-agent.service"


def status_command(*, as_json: bool, decide: bool = True) -> str:
    argv = [AGENT_COMMAND, "status", "--state-dir", STATE_DIR]
    if as_json:
        argv.append("--json")
    if not decide:
        argv.append("--no-decide")
    return shlex.join(argv)


def run_status(connection: Connection, *, as_json: bool, decide: bool = True) -> str:
    """The agent's status as it prints it; a CliError when the head has none."""
    done = connection.run(status_command(as_json=as_json, decide=decide), hide=True,
                          warn=True, in_stream=False)
    if done.exited == 0:
        return done.stdout
    if done.exited == 127:
        cause = f"{AGENT_COMMAND} is not installed"
    else:
        cause = (done.stderr.strip() or done.stdout.strip() or f"exit code {done.exited}")
    raise errors.CliError(
        f"head {connection.host}: no agent status ({cause}). The agent is installed and "
        "started by `onprem-ray up` (unless --no-agent); its journal: `onprem-ray monitor`.",
        errors.NO_AGENT)


def lifecycle_states(connection: Connection) -> dict[str, str]:
    """Each machine's lifecycle state as the agent recorded it (ip -> state)."""
    status = json.loads(run_status(connection, as_json=True, decide=False))
    return machine_states(status)


def machine_states(status: dict[str, Any]) -> dict[str, str]:
    return {machine["ip"]: machine["state"] for machine in status.get("machines", [])}


def journal_command(*, follow: bool, lines: int) -> str:
    argv = ["sudo", "-n", "journalctl", "--unit", SERVICE, "--no-pager", "--lines", str(lines),
            "--output", "short-iso"]
    if follow:
        argv.append("--follow")
    return shlex.join(argv)
