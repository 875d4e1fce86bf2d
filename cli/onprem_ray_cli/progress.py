"""What a playbook run is doing, from ansible-runner's events (pure: no I/O).

`Progress.feed(event)` keeps one line per host (the step it is on, or how it ended), the
failures with their host, step and output, and the run's final counts; the `render_*`
functions turn them into text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RUNNING, DONE, FAILED, UNREACHABLE = "running", "done", "failed", "unreachable"
OUTPUT_LINES = 40  # of a failing step's output, the last ones


@dataclass
class HostLine:
    host: str
    step: str = ""
    state: str = RUNNING


@dataclass(frozen=True)
class Failure:
    host: str
    play: str
    step: str
    unreachable: bool
    output: str


@dataclass
class Progress:
    hosts: dict[str, HostLine] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    stats: dict[str, dict[str, int]] | None = None  # host -> ok, changed, failed, ...
    play: str = ""

    def feed(self, event: dict[str, Any]) -> list[str]:
        """Take one event; return the hosts whose line changed."""
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_play_start":
            self.play = data.get("play", "")
            return []
        if kind == "playbook_on_stats":
            self.stats = _stats(data)
            return []
        host = data.get("host")
        if not host or not kind.startswith("runner_on_"):
            return []
        line = self.hosts.setdefault(host, HostLine(host))
        step = data.get("task", "")
        if kind == "runner_on_start" and line.state == RUNNING:
            if line.step == step:
                return []
            line.step = step
            return [host]
        if kind == "runner_on_failed" and not data.get("ignore_errors"):
            line.state, line.step = FAILED, step
            self.failures.append(Failure(host, self.play, step, False,
                                         failure_output(data.get("res") or {})))
            return [host]
        if kind == "runner_on_unreachable":
            line.state, line.step = UNREACHABLE, step
            self.failures.append(Failure(host, self.play, step, True,
                                         failure_output(data.get("res") or {})))
            return [host]
        return []

    def finish(self) -> list[str]:
        """At the end of the run: hosts still `running` are done (their last step ended)."""
        changed = []
        for line in self.hosts.values():
            if line.state == RUNNING:
                line.state = DONE
                changed.append(line.host)
        return changed

    def outcomes(self) -> dict[str, str]:
        """host -> failed | unreachable | changed | ok, from the final counts (or the lines
        when the run ended without them)."""
        if self.stats is None:
            return {host: line.state for host, line in self.hosts.items()}
        result = {}
        for host, counts in self.stats.items():
            if counts["unreachable"]:
                result[host] = UNREACHABLE
            elif counts["failed"]:
                result[host] = FAILED
            else:
                result[host] = "changed" if counts["changed"] else "ok"
        return result


def _stats(data: dict[str, Any]) -> dict[str, dict[str, int]]:
    names = {"ok": "ok", "changed": "changed", "failures": "failed", "dark": "unreachable",
             "skipped": "skipped", "rescued": "rescued", "ignored": "ignored"}
    hosts = set(data.get("processed") or {})
    for key in names:
        hosts |= set(data.get(key) or {})
    return {host: {name: int((data.get(key) or {}).get(host, 0)) for key, name in names.items()}
            for host in sorted(hosts)}


def failure_output(res: dict[str, Any]) -> str:
    """What a failed step said: its message, the command's exit code and output, each loop
    item that failed."""
    parts = []
    if res.get("msg"):
        parts.append(str(res["msg"]))
    if res.get("rc") not in (None, 0):
        parts.append(f"exit code {res['rc']}")
    for stream in ("stdout", "stderr", "module_stdout", "module_stderr"):
        text = res.get(stream)
        if isinstance(text, str) and text.strip():
            parts.append(f"{stream}:\n{text.rstrip()}")
    for item in res.get("results") or []:
        if isinstance(item, dict) and item.get("failed"):
            parts.append(f"item {item.get('item')!r}: {failure_output(item)}")
    lines = "\n".join(parts).splitlines() or ["(the step gave no output)"]
    return "\n".join(lines[-OUTPUT_LINES:])


# ---------------------------------------------------------------- text


def render_line(line: HostLine, width: int) -> str:
    mark = {RUNNING: "..", DONE: "ok", FAILED: "FAILED", UNREACHABLE: "UNREACHABLE"}
    return f"{line.host:<{width}}  {mark[line.state]:<11}  {line.step}".rstrip()


def render_table(progress: Progress, roles: dict[str, str]) -> str:
    """Hosts x outcome, with the counts Ansible's recap gives."""
    outcomes = progress.outcomes()
    if not outcomes:
        return "no host was reached\n"
    width = max(len(host) for host in outcomes)
    columns = ("ok", "changed", "failed", "unreachable")
    lines = [f"{'host':<{width}}  {'role':<6}  {'outcome':<11}  "
             + "  ".join(f"{c:>{len(c)}}" for c in columns)]
    for host, outcome in outcomes.items():
        counts = (progress.stats or {}).get(host, {})
        lines.append(f"{host:<{width}}  {roles.get(host, ''):<6}  {outcome:<11}  "
                     + "  ".join(f"{counts.get(c, 0):>{len(c)}}" for c in columns))
    return "\n".join(lines) + "\n"


def render_failures(progress: Progress) -> str:
    out = []
    for failure in progress.failures:
        what = "unreachable" if failure.unreachable else "failed"
        out.append(f"{failure.host} {what} at step \"{failure.step}\""
                   + (f" (play \"{failure.play}\")" if failure.play else "") + ":")
        out.extend("    " + line for line in failure.output.splitlines())
    return "\n".join(out) + ("\n" if out else "")
