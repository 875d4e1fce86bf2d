"""Running one of the collection's playbooks through ansible-runner, with its events shown
as they come and Ansible's whole output kept in a log file."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onprem_ray_cli import errors
from onprem_ray_cli.live import LiveView
from onprem_ray_cli.progress import Progress

KEEP_RUNS = 20  # the latest runs' artifacts kept per cluster


@dataclass(frozen=True)
class RunOutcome:
    progress: Progress
    status: str  # ansible-runner's: successful, failed, canceled, timeout
    rc: int | None
    log: Path  # Ansible's whole output

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0


def environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """ansible-playbook from this Python's bin directory; plain text in the log; host keys
    checked as the inventory says (ansible-runner would set ANSIBLE_HOST_KEY_CHECKING=False,
    and Ansible's StrictHostKeyChecking=no would come before the inventory's option)."""
    bin_dir = str(Path(sys.executable).parent)
    path = environ.get("PATH", os.defpath)
    env = {"ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
           "ANSIBLE_HOST_KEY_CHECKING": environ.get("ANSIBLE_HOST_KEY_CHECKING", "True")}
    if bin_dir not in path.split(os.pathsep):
        env["PATH"] = os.pathsep.join([bin_dir, path])
    return env


def run_playbook(work_dir: Path, playbook: str, inventory: Path, *,
                 extravars: Mapping[str, Any] | None = None,
                 tags: str | None = None, view_stream=None) -> RunOutcome:
    import ansible_runner

    ident = f"{playbook.rsplit('.', 1)[-1]}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    private = work_dir / "runner"
    private.mkdir(parents=True, exist_ok=True, mode=0o700)
    progress = Progress()
    view = LiveView(progress, view_stream or sys.stdout)

    def on_event(event: dict) -> bool:
        view.show(progress.feed(event))
        return True  # keep the event in the artifacts

    options: dict[str, Any] = {}
    if tags:
        options["tags"] = tags
    try:
        runner = ansible_runner.run(
            private_data_dir=str(private), playbook=playbook, inventory=str(inventory),
            ident=ident, extravars=dict(extravars or {}), envvars=environment(),
            event_handler=on_event, quiet=True, suppress_env_files=True,
            rotate_artifacts=KEEP_RUNS, **options)
    except (OSError, RuntimeError, ValueError) as err:
        raise errors.CliError(f"ansible-runner could not run {playbook}: {err}",
                              errors.TOOL_FAILED) from None
    view.show(progress.finish())
    return RunOutcome(progress, runner.status, runner.rc,
                      private / "artifacts" / ident / "stdout")


def log_tail(log: Path, lines: int = 30) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])
