"""What a finished run means for its machines: a changed SSH host key and an add stopped at its
time limit are told apart, with what the operator should do.

`data/host_key_changed/` holds the artifacts of a real ansible-runner run (ansible-core, OpenSSH
with StrictHostKeyChecking=yes against a server whose host key is not the one known_hosts held
for it), with its paths and address rewritten to a head's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from onprem_ray_agent import outcomes
from onprem_ray_agent.adapters.runner import ADD_WORKERS, OK, UNREACHABLE, RunResult, read_result
from onprem_ray_agent.model import ActionKind, Event

DATA = Path(__file__).parent / "data"
SWAPPED = "10.0.1.7"


@pytest.fixture
def host_key_run(tmp_path) -> RunResult:
    directory = tmp_path / "add-cpu-1-abc"
    shutil.copytree(DATA / "host_key_changed", directory)
    return read_result(directory, "add-cpu-1-abc", ADD_WORKERS, [SWAPPED])


def test_the_real_run_reads_as_unreachable_with_ssh_saying_why(host_key_run) -> None:
    assert dict(host_key_run.hosts) == {SWAPPED: UNREACHABLE}
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in host_key_run.errors[SWAPPED]


def test_a_changed_host_key_fails_the_add_saying_what_to_check(host_key_run) -> None:
    (step,) = outcomes.steps(ActionKind.ADD, SWAPPED, host_key_run)
    assert step.event == Event.UNREACHABLE  # a failure: backoff, then quarantine
    assert step.reason.startswith(f"SSH host key changed for {SWAPPED} (run add-cpu-1-abc): "
                                  "nothing was sent to it")
    assert f"ssh-keygen -R {SWAPPED}" in step.reason and "run up" in step.reason
    # the last error leads with the reason (a quarantine quotes it), then what ssh said
    assert step.error.startswith(step.reason + "\nssh said: ")
    assert "Host key verification failed" in step.error


def test_a_changed_host_key_while_retiring_is_told_apart_too(host_key_run) -> None:
    steps = outcomes.steps(ActionKind.RETIRE, SWAPPED, host_key_run)
    assert [s.event for s in steps] == [Event.DRAINED, Event.UNREACHABLE]
    assert steps[1].reason.startswith(f"SSH host key changed for {SWAPPED}")


def test_a_host_merely_unreachable_keeps_its_reason() -> None:
    result = RunResult("add-1", ADD_WORKERS, (SWAPPED,), "failed", 4,
                       hosts={SWAPPED: UNREACHABLE},
                       errors={SWAPPED: "Gather: ssh: connect to host 10.0.1.7 port 22: "
                                        "No route to host"})
    (step,) = outcomes.steps(ActionKind.ADD, SWAPPED, result)
    assert step.reason == "unreachable over SSH (run add-1)"
    assert step.error == result.errors[SWAPPED]


def test_an_add_stopped_at_its_time_limit_names_provision_timeout_s() -> None:
    result = RunResult("add-2", ADD_WORKERS, (SWAPPED, "10.0.1.8"), "timeout", 254,
                       hosts={"10.0.1.8": OK})
    (step,) = outcomes.steps(ActionKind.ADD, SWAPPED, result, provision_timeout_s=600)
    assert step.event == Event.PROVISION_TIMEOUT
    assert step.reason.startswith("add_workers run add-2 ran longer than provision_timeout_s "
                                  "600 s and was stopped")
    assert "raise provision_timeout_s" in step.reason
    assert step.error == step.reason
    assert outcomes.steps(ActionKind.ADD, "10.0.1.8", result, provision_timeout_s=600) == ()


def test_an_interrupted_add_is_not_called_a_timeout() -> None:
    result = RunResult("add-3", ADD_WORKERS, (SWAPPED,), outcomes.INTERRUPTED, None)
    (step,) = outcomes.steps(ActionKind.ADD, SWAPPED, result, provision_timeout_s=600)
    assert step.event == Event.ADD_FAILED
    assert "provision_timeout_s" not in step.reason
