"""`submit`: a local script copied to the head and run there with Ray's address and the
cluster's token, as Ray's own user (the head role's settings: RAY_AUTH_MODE=token,
RAY_AUTH_TOKEN_PATH), its output streamed and its exit code passed through."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from onprem_ray_cli import errors, resolve, shell, ssh

RAY_USER = "ray"  # roles/ray: ray_user
RAY_PYTHON = "/opt/ray/venv/bin/python"  # roles/ray: ray_venv_dir
TOKEN_FILE = "/etc/ray/auth_token"  # noqa: S105 (a path): roles/ray ray_auth_token_file


def run_command(script: str, script_args: list[str], ray_address: str) -> str:
    """The script run by Ray's Python as Ray's user, in the directory it was copied to."""
    env = ["RAY_AUTH_MODE=token", f"RAY_AUTH_TOKEN_PATH={TOKEN_FILE}",
           f"RAY_ADDRESS={ray_address}", "PYTHONUNBUFFERED=1"]
    return shlex.join(["sudo", "-n", "-u", RAY_USER, "env", *env, RAY_PYTHON, script,
                       *script_args])


def submit(args: argparse.Namespace) -> int:
    script = Path(args.script)
    if not script.is_file():
        raise errors.CliError(f"{script}: no such script", errors.USAGE)
    cluster = resolve.load(args.cluster).cluster
    with ssh.connect(cluster, cluster.head_ip) as connection:
        made = connection.run("mktemp -d /tmp/onprem-ray-submit.XXXXXX", hide=True,
                              warn=True, in_stream=False)
        if made.exited != 0:
            raise errors.CliError(f"head {cluster.head_ip}: cannot make a directory for the "
                                  f"script: {made.stderr.strip()}", errors.TOOL_FAILED)
        directory = made.stdout.strip()
        try:
            remote = f"{directory}/{script.name}"
            connection.put(str(script), remote=remote)
            connection.run(f"chmod 0755 {shlex.quote(directory)} && chmod 0644 "
                           f"{shlex.quote(remote)}", hide=True, in_stream=False)
            command = (f"cd {shlex.quote(directory)} && "
                       + run_command(script.name, args.script_args,
                                     shell.ray_address(cluster)))
            done = connection.run(command, warn=True, pty=False, in_stream=False)
        finally:
            connection.run(f"rm -rf {shlex.quote(directory)}", hide=True, warn=True,
                           in_stream=False)
    return done.exited
