"""The command's own exit codes (docs/cli.md lists them) and the error that carries one.

Commands that run something on a machine (`exec`, `attach`, `submit`, `monitor`) exit with
that command's own code; the codes below are those of the command itself, chosen from the
BSD sysexits range so that a remote command's usual 1, 2, 126 or 127 is not mistaken for them.
"""

from __future__ import annotations

OK = 0
FAILED = 1  # up/down: a host failed (the table says which); job submit: the job failed
USAGE = 2  # wrong arguments (argparse's own code)
CLUSTER_FILE_REFUSED = 65  # the cluster file is malformed or refused by the validation
CLUSTER_FILE_MISSING = 66  # the cluster file does not exist or cannot be read
UNREACHABLE = 69  # a machine cannot be reached over SSH (down, wrong address, port closed)
TOOL_FAILED = 70  # a local tool the command needs failed (rsync, ansible-runner)
NO_AGENT = 75  # the head answers but has no agent status (agent not installed or not run)
HOST_KEY = 77  # a machine's SSH host key is unknown or does not match (not verified)
INTERRUPTED = 130  # Ctrl-C

EXIT_CODES = {
    OK: "success (for exec, attach, submit, monitor: the remote command's own code)",
    FAILED: "up/down: a host failed; job submit: the job ended FAILED or STOPPED",
    USAGE: "wrong arguments",
    CLUSTER_FILE_REFUSED: "the cluster file is malformed or refused",
    CLUSTER_FILE_MISSING: "the cluster file does not exist or cannot be read",
    UNREACHABLE: "a machine cannot be reached over SSH",
    TOOL_FAILED: "a local tool failed (rsync, ansible-runner)",
    NO_AGENT: "no agent status on the head (the agent is not installed or never ran)",
    HOST_KEY: "a machine's SSH host key is unknown or does not match",
    INTERRUPTED: "interrupted (Ctrl-C)",
}


class CliError(Exception):
    """An error the command reports in one message, with what to do next, and exits with."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code
