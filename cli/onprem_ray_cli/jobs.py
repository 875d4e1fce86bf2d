"""`job submit`: a command submitted through Ray's Jobs API (the head's dashboard, reached
over an SSH tunnel, with the cluster's token), its logs followed until it ends."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from onprem_ray_cli import errors, resolve, ssh, tunnel

TERMINAL = {"SUCCEEDED": errors.OK, "FAILED": errors.FAILED, "STOPPED": errors.FAILED}
TOKEN_COPY = "~/.ray/auth_token"  # noqa: S105 (a path): the login user's copy (roles/ray)


class JobsApi:
    """The few calls of Ray's Jobs REST API this command makes."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}",
                        "Content-Type": "application/json"}

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        request = urllib.request.Request(  # noqa: S310 (the tunnel's http URL)
            self.url + path, method=method, headers=self.headers,
            data=None if body is None else json.dumps(body).encode())
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace").strip()
            raise errors.CliError(f"Ray's Jobs API {method} {path}: HTTP {err.code}: "
                                  f"{detail[:500]}", errors.FAILED) from None
        except (urllib.error.URLError, OSError) as err:
            raise errors.CliError(f"Ray's Jobs API did not answer ({err}): is the head's "
                                  "dashboard running? `onprem-ray status` shows the head",
                                  errors.UNREACHABLE) from None

    def submit(self, entrypoint: str) -> str:
        return self._call("POST", "/api/jobs/", {"entrypoint": entrypoint})["submission_id"]

    def status(self, job: str) -> str:
        return self._call("GET", f"/api/jobs/{job}")["status"]

    def logs(self, job: str) -> str:
        return self._call("GET", f"/api/jobs/{job}/logs")["logs"]


def follow(api: JobsApi, job: str, poll_s: float = 1.0) -> int:
    """Print the job's log as it grows; the exit code of its final status."""
    shown = 0
    while True:
        status = api.status(job)
        logs = api.logs(job)
        sys.stdout.write(logs[shown:])
        sys.stdout.flush()
        shown = len(logs)
        if status in TERMINAL:
            print(f"job {job}: {status}", file=sys.stderr)
            return TERMINAL[status]
        time.sleep(poll_s)


def job_submit(args: argparse.Namespace) -> int:
    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not command:
        raise errors.CliError("no command: onprem-ray job submit CLUSTER -- CMD ...",
                              errors.USAGE)
    cluster = resolve.load(args.cluster).cluster
    with ssh.connect(cluster, cluster.head_ip) as connection:
        read = connection.run(f"cat {TOKEN_COPY}", hide=True, warn=True, in_stream=False)
        if read.exited != 0:
            raise errors.CliError(f"head {cluster.head_ip}: no token in {TOKEN_COPY} of "
                                  f"{cluster.auth.ssh_user} ({read.stderr.strip()}): run "
                                  "`onprem-ray up` first", errors.NO_AGENT)
        port = tunnel.free_port()
        with tunnel.forward(connection, port, cluster.head_ip, tunnel.DASHBOARD_PORT) as url:
            api = JobsApi(url, read.stdout.strip())
            job = api.submit(shlex.join(command))
            print(f"job {job} submitted to {cluster.cluster_name}", file=sys.stderr)
            if args.no_wait:
                print(job)
                return errors.OK
            return follow(api, job)
