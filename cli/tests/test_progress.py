"""Progress from recorded ansible-runner events (real runs of onprem.ray.up on the local
pool, trimmed to the fields read): one line per host, the table, the failures."""

from __future__ import annotations

import io
import json
from pathlib import Path

from onprem_ray_cli.live import LiveView
from onprem_ray_cli.progress import (
    DONE,
    FAILED,
    RUNNING,
    UNREACHABLE,
    Progress,
    failure_output,
    render_failures,
    render_table,
)

FIXTURES = Path(__file__).parent / "fixtures"
HEAD, WORKER1, WORKER2 = "10.213.205.10", "10.213.205.11", "10.213.205.12"
ROLES = {HEAD: "head", WORKER1: "worker", WORKER2: "worker"}


def events(name: str) -> list[dict]:
    return json.loads((FIXTURES / name).read_text())


def fed(name: str, stream: io.StringIO | None = None) -> Progress:
    progress = Progress()
    view = LiveView(progress, stream or io.StringIO(), redraw=False)
    for event in events(name):
        view.show(progress.feed(event))
    view.show(progress.finish())
    return progress


def test_a_successful_run_has_one_line_per_host_each_done():
    progress = fed("events_up_first.json")
    assert set(progress.hosts) == {HEAD, WORKER1, WORKER2}
    assert {line.state for line in progress.hosts.values()} == {DONE}
    assert progress.failures == []
    assert progress.outcomes() == {HEAD: "changed", WORKER1: "changed", WORKER2: "changed"}


def test_the_live_lines_follow_each_hosts_steps_in_order():
    stream = io.StringIO()
    fed("events_up_first.json", stream)
    lines = stream.getvalue().splitlines()
    head_lines = [line for line in lines if line.startswith(HEAD)]
    starts = [e["event_data"]["task"] for e in events("events_up_first.json")
              if e["event"] == "runner_on_start" and e["event_data"]["host"] == HEAD]
    assert len(head_lines) > 10
    # A line each time the head moves to another step, and a last one when it is done.
    assert [line.split(None, 2)[2] for line in head_lines[:-1]] == [
        step for i, step in enumerate(starts) if i == 0 or starts[i - 1] != step]
    assert head_lines[-1].split()[1] == "ok"


def test_the_table_is_hosts_by_outcome_with_the_recaps_counts():
    table = render_table(fed("events_up_first.json"), ROLES).splitlines()
    assert table[0].split() == ["host", "role", "outcome", "ok", "changed", "failed",
                                "unreachable"]
    rows = {line.split()[0]: line.split()[1:] for line in table[1:]}
    assert rows[HEAD] == ["head", "changed", "34", "18", "0", "0"]
    assert rows[WORKER1][:2] == ["worker", "changed"] and rows[WORKER1][-2:] == ["0", "0"]


def test_a_failed_run_names_the_host_the_step_and_its_output():
    progress = fed("events_up_failed.json")
    assert progress.outcomes()[WORKER1] == FAILED and progress.outcomes()[HEAD] == "ok"
    (failure,) = progress.failures
    assert (failure.host, failure.step, failure.play) == (
        WORKER1, "Check the worker selection", "Ray workers")
    assert render_failures(progress) == (
        f'{WORKER1} failed at step "Check the worker selection" (play "Ray workers"):\n'
        "    ray_up_workers=bogus: use min, all or none\n")


def test_unreachable_and_ignored_failures():
    progress = Progress()
    assert progress.feed({"event": "runner_on_start",
                          "event_data": {"host": "h1", "task": "probe"}}) == ["h1"]
    assert progress.feed({"event": "runner_on_start",
                          "event_data": {"host": "h1", "task": "probe"}}) == []
    ignored = {"event": "runner_on_failed", "event_data": {
        "host": "h1", "task": "probe", "ignore_errors": True, "res": {"msg": "fine"}}}
    assert progress.feed(ignored) == [] and progress.hosts["h1"].state == RUNNING
    progress.feed({"event": "runner_on_unreachable", "event_data": {
        "host": "h2", "task": "probe", "res": {"msg": "ssh: connect to host h2: refused"}}})
    assert progress.hosts["h2"].state == UNREACHABLE
    assert progress.outcomes() == {"h1": RUNNING, "h2": UNREACHABLE}  # no stats yet
    assert 'h2 unreachable at step "probe"' in render_failures(progress)
    assert progress.finish() == ["h1"] and progress.hosts["h1"].state == DONE


def test_failure_output_keeps_the_commands_code_and_the_end_of_its_output():
    res = {"msg": "non-zero return code", "rc": 3, "stdout": "\n".join(map(str, range(100))),
           "stderr": "boom"}
    text = failure_output(res)
    assert text.splitlines()[-1] == "boom" and "exit code 3" not in text  # cut to the end
    assert len(text.splitlines()) == 40
    short = failure_output({"msg": "bad", "rc": 2, "stderr": "no such file"})
    assert short == "bad\nexit code 2\nstderr:\nno such file"
    assert failure_output({}) == "(the step gave no output)"
    looped = failure_output({"results": [{"item": "a", "failed": True, "msg": "x"},
                                         {"item": "b", "failed": False}]})
    assert looped == "item 'a': x"


def test_redraw_mode_rewrites_the_block_in_place():
    progress = Progress()
    stream = io.StringIO()
    view = LiveView(progress, stream, redraw=True)
    view.show(progress.feed({"event": "runner_on_start",
                             "event_data": {"host": "a", "task": "one"}}))
    view.show(progress.feed({"event": "runner_on_start",
                             "event_data": {"host": "b", "task": "two"}}))
    out = stream.getvalue()
    assert out.count("\x1b[1F") == 1  # back over the one line drawn first
    assert out.endswith("\x1b[2Ka  ..           one\n\x1b[2Kb  ..           two\n")
