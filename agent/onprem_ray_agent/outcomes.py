"""What a finished playbook run means for each of its machines: lifecycle events. Pure.

add_workers: a failed host has failed (with the playbook's output as its error), an unreachable
one is told apart; a host that got through stays joining until Ray lists it ALIVE, which the
decision sees. retire_workers drains through the GCS, then stops Ray: a success is drained then
retired (spare again); a failure before Ray was stopped leaves the node running, so it is active
again; a failure while stopping it, or an unreachable host, has failed. A host the run gave no
result for (timed out, interrupted by a killed agent) has failed an add (a spare is
tried instead; if Ray lists it ALIVE after all it is adopted), and is active again after a
retire, until Ray says otherwise; but a host of an add the agent canceled is canceled (no
failure, no backoff), and retired before it is spare again. An add stopped by its time limit
says so, naming provision_timeout_s. A host whose SSH host key changed (another machine behind
a known address) is told apart: ssh refused it before sending anything, and only the operator
can say whether the new key is right.
"""

from __future__ import annotations

from dataclasses import dataclass

from onprem_ray_agent.adapters.runner import FAILED, OK, UNREACHABLE, RunResult
from onprem_ray_agent.model import ActionKind, Event

CANCELED = "canceled"  # ansible-runner's status of a run the agent canceled
TIMEOUT = "timeout"  # ansible-runner's status of a run stopped at its time limit
INTERRUPTED = "interrupted"  # the agent was killed during the run; no final status in its artifacts


@dataclass(frozen=True)
class Step:
    event: Event
    reason: str
    error: str = ""


def failed_after_drain(task: str) -> bool:
    """retire_workers failed in the task that stops Ray, after the drain went through
    (roles/worker/tasks/retire.yml: "Retire | Ray stopped and disabled")."""
    name = task.lower()
    return "stop" in name and "drain" not in name


# What OpenSSH prints when the key a host offers is not the one known_hosts holds for it.
_HOST_KEY_CHANGED = ("REMOTE HOST IDENTIFICATION HAS CHANGED", "Host key verification failed")


def host_key_changed(error: str) -> bool:
    """ssh refused the host: its host key is not the one known for its address."""
    return any(marker in error for marker in _HOST_KEY_CHANGED)


def host_key_reason(ip: str, run: str) -> str:
    return (f"SSH host key changed for {ip} ({run}): nothing was sent to it; if the machine "
            f"was replaced on purpose, remove its old key from the head's known_hosts "
            f"(ssh-keygen -R {ip}; on the controller too, or from auth.ssh_known_hosts_file) "
            f"and run up -e ray_up_workers=all (which starts Ray there; a quarantined machine "
            f"leaves quarantine once Ray lists it ALIVE); otherwise find out what answers at "
            f"{ip}")


def steps(kind: str, ip: str, result: RunResult,
          provision_timeout_s: float | None = None) -> tuple[Step, ...]:
    """The events to apply, in order, to machine `ip` of a run of `kind` (add or retire);
    `provision_timeout_s`: the add's time limit, named when a run reached it."""
    outcome = result.hosts.get(ip)
    error = result.errors.get(ip, "")
    run = f"run {result.request_id}"
    unreachable = f"unreachable over SSH ({run})"
    if host_key_changed(error):
        # the reason first, so that a quarantine's reason (its last error) says what to do
        unreachable = host_key_reason(ip, run)
        error = f"{unreachable}\nssh said: {error}"
    if kind == ActionKind.ADD:
        if outcome == FAILED:
            return (Step(Event.ADD_FAILED, f"add_workers failed ({run})", error),)
        if outcome == UNREACHABLE:
            return (Step(Event.UNREACHABLE, unreachable, error),)
        if outcome == OK:
            return ()  # joining until Ray lists it ALIVE, or the provision timeout
        if result.status == CANCELED:
            # The agent canceled it (no demand needed it, or the agent stopped): not a fault
            # of the machine. retire_workers stops whatever the run started there.
            return (Step(Event.JOIN_CANCELED, f"add_workers {run} canceled before it was "
                         "done: Ray is stopped there, then it is spare"),)
        if result.status == TIMEOUT:
            limit = ("provision_timeout_s" if provision_timeout_s is None
                     else f"provision_timeout_s {provision_timeout_s:g} s")
            reason = (f"add_workers {run} ran longer than {limit} and was stopped before a "
                      "result for this host; if its setup needs longer, raise "
                      "provision_timeout_s (roles/head: head_agent_provision_timeout)")
            return (Step(Event.PROVISION_TIMEOUT, reason, reason),)
        # No result (interrupted by a killed agent): Ray may never have been
        # started there. Failed now, tried again after its backoff, rather than held for the
        # whole provision timeout; one that did join is adopted when Ray lists it ALIVE.
        return (Step(Event.ADD_FAILED, f"add_workers {run} ended {result.status} before a "
                     "result for this host"),)
    if kind != ActionKind.RETIRE:
        return ()
    drained = Step(Event.DRAINED, f"drained ({run})")
    if outcome == OK:
        return (drained, Step(Event.RETIRED, f"retired: Ray stopped ({run})"))
    if outcome == UNREACHABLE:
        if not host_key_changed(error):
            unreachable = f"unreachable over SSH while retiring ({run})"
        return (drained, Step(Event.UNREACHABLE, unreachable, error))
    if outcome == FAILED:
        if failed_after_drain(result.failed_tasks.get(ip, "")):
            return (drained, Step(Event.RETIRE_FAILED, f"drained, but Ray could not be "
                                  f"stopped ({run})", error))
        return (Step(Event.DRAIN_FAILED, f"not retired, Ray keeps running there ({run})",
                     error),)
    return (Step(Event.DRAIN_FAILED,
                 f"retire {run} ended {result.status} before a result for this host: active "
                 "until Ray says otherwise"),)
