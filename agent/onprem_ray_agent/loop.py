"""One iteration of the agent: observe -> decide -> act -> record, as a function of `now`.

Observe: the runs that ended (their hosts' outcomes become lifecycle events), Ray's snapshot,
the machines' records. Decide: `policy.decide`, pure. Act: bookkeeping actions (admit, mark,
forget) in one store transaction; each add or retire first records its machines and its run in
one transaction, then starts the playbook, so a crash in between leaves a run the next agent
finds unfinished and resolves (`reconcile`). A machine in a running run is never put in
another run; timeouts of such a machine are left to its run, which has its own time limit.
An add run that the decision finds no demand needs any more is canceled through the runner;
the decision gets back, each iteration, since when each such run has been unneeded, and since
when each active machine Ray does not list has been absent.

Ray, the runner and the store are injected, so the tests drive iterations with fakes of Ray
and the runner and the real store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from onprem_ray_agent import outcomes, transitions
from onprem_ray_agent.adapters.ray_state import RayUnavailable
from onprem_ray_agent.adapters.runner import (
    ADD_WORKERS,
    RETIRE_WORKERS,
    PlaybookRunner,
    RunResult,
)
from onprem_ray_agent.demand import has_demand
from onprem_ray_agent.model import (
    Action,
    ActionKind,
    Claim,
    Config,
    Decision,
    DemandSnapshot,
    Event,
    Machine,
    MachineState,
)
from onprem_ray_agent.policy import decide
from onprem_ray_agent.store import StateStore

log = logging.getLogger("onprem_ray_agent")

PLAYBOOKS = {ActionKind.ADD.value: ADD_WORKERS, ActionKind.RETIRE.value: RETIRE_WORKERS}
# A retire run may take the drain deadline, then the time to stop Ray.
RETIRE_STOP_MARGIN_S = 120.0
# Timeouts that a machine's own running run decides instead.
_LEFT_TO_THE_RUN = frozenset({Event.PROVISION_TIMEOUT, Event.DRAIN_FAILED})
_RUN_SUMMARY_CHARS = 8000


class RayState(Protocol):
    def snapshot(self) -> DemandSnapshot: ...


class Claims(Protocol):
    """Where `up` tells which workers it starts itself (claims.ClaimBox)."""

    def read(self) -> Claim | None: ...

    def consume(self, claim: Claim) -> None: ...


class Metrics(Protocol):
    """What the loop reports (metrics.AgentMetrics; absent in tests that need none)."""

    def action(self, kind: str, count: int) -> None: ...

    def run_finished(self, playbook: str, outcome: str, duration_s: float | None) -> None: ...

    def scale_up_latency(self, seconds: float) -> None: ...

    def iteration(self, report: IterationReport, machines: Iterable[Machine],
                  config: Config) -> None: ...


@dataclass(frozen=True)
class IterationReport:
    """What one iteration saw, decided and did."""

    now: float
    ray_error: str = ""  # Ray could not be asked: nothing was decided
    demand: DemandSnapshot | None = None
    decision: Decision | None = None
    acted: tuple[Action, ...] = ()  # what was applied (possibly fewer IPs than decided)
    held: tuple[str, ...] = ()  # why a part of the decision was not acted on
    started: tuple[str, ...] = ()  # request ids of the runs started
    finished: tuple[RunResult, ...] = ()
    duration_s: float = 0.0
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.ray_error


@dataclass
class _Iteration:
    now: float
    acted: list[Action] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)


class Agent:
    """The control loop over one state store; `iterate(now)` is one pass."""

    def __init__(self, config: Config, store: StateStore, ray: RayState,
                 runner: PlaybookRunner | None, *, metrics: Metrics | None = None,
                 dry_run: bool = False, monotonic: Any = time.monotonic,
                 unneeded_since: Mapping[str, float] | None = None,
                 absent_since: Mapping[str, float] | None = None,
                 claims: Claims | None = None) -> None:
        if not dry_run and runner is None:
            raise ValueError("an agent that acts needs a playbook runner")
        self.config = config
        self.store = store
        self.ray = ray
        self.runner = runner
        self.metrics = metrics
        self.dry_run = dry_run
        self.claims = claims
        self._monotonic = monotonic
        self._reported_infeasible: set[str] = set()
        self._ray_down_since: float | None = None
        self._demand_since: float | None = None
        self._add_demand_seen: dict[str, float] = {}  # ip -> when the demand it is for began
        # Add runs no demand needs, since when (the last decision's); a restart starts afresh.
        self._unneeded_since: dict[str, float] = dict(unneeded_since or {})
        # Active machines Ray does not list, since when (the last decision's); a restart, and
        # a GCS that does not answer, start afresh: only the head ALIVE counts.
        self._absent_since: dict[str, float] = dict(absent_since or {})
        # Runs asked to cancel, until they end: a cancel lands seconds later (ansible-runner
        # checks between its reads, then waits for the output to close), and the decisions in
        # between, still unneeded, are not a new cancel.
        self._cancel_asked: set[str] = set()

    # ------------------------------------------------------------ configuration

    @property
    def pool(self) -> frozenset[str]:
        return frozenset(ip for t in self.config.node_types for ip in t.ips
                         if ip != self.config.head_ip)

    def reconfigure(self, config: Config) -> None:
        """A new cluster file takes effect from the next iteration."""
        self.config = config

    # ------------------------------------------------------------ startup

    def reconcile(self, now: float) -> list[RunResult]:
        """Resolve the runs a killed agent left unfinished: from their artifacts when they
        ended, else as interrupted (their machines are left to the decision). Also a machine left
        retiring with no run, which nothing else would ever move."""
        runner = self._runner()
        resolved = []
        for run in self.store.runs(limit=1_000_000, unfinished_only=True):
            result = runner.recorded(run.request_id)
            if result is None:
                result = RunResult(request_id=run.request_id, playbook=PLAYBOOKS.get(run.kind, ""),
                                   ips=run.ips, status=outcomes.INTERRUPTED, rc=None)
                log.warning("run %s (%s on %s) was left unfinished by a previous agent and "
                            "has no final status: recorded as interrupted", run.request_id,
                            run.kind, ", ".join(run.ips))
            else:
                log.info("run %s (%s on %s) ended %s while no agent watched it",
                         run.request_id, run.kind, ", ".join(run.ips), result.status)
            self._record_result(result, now)
            resolved.append(result)
        busy = self._busy()
        stranded = [m for m in self.store.machines().values()
                    if m.state == MachineState.RETIRING and m.ip not in busy]
        with self.store.transaction():
            for machine in stranded:
                self._apply(machine, Event.RETIRE_FAILED, now,
                            reason="left retiring by a previous agent with no run to finish it")
        return resolved

    # ------------------------------------------------------------ one iteration

    def iterate(self, now: float) -> IterationReport:
        started = self._monotonic()
        finished = [] if self.dry_run else self.collect_runs(now)
        try:
            demand = self.ray.snapshot()
        except RayUnavailable as err:
            report = IterationReport(now=now, ray_error=str(err), finished=tuple(finished),
                                     duration_s=self._monotonic() - started,
                                     dry_run=self.dry_run)
            self._ray_unavailable(now, str(err))
            self._absent_since = {}  # a GCS back may be a new one, that workers join again
            self._report(report)
            return report
        if self._ray_down_since is not None:
            log.info("Ray's GCS answers again after %.0f s", now - self._ray_down_since)
            self._ray_down_since = None
        self._track_demand(demand, now)
        machines = self._machines()
        running_adds = {run.request_id for run in self.store.runs(limit=1_000_000,
                                                                  unfinished_only=True)
                        if run.kind == ActionKind.ADD.value}
        claim = self.claims.read() if self.claims is not None else None
        decision = decide(self.config, machines.values(), demand, now,
                          running_adds=running_adds, unneeded_since=self._unneeded_since,
                          claim=claim, absent_since=self._absent_since)
        self._unneeded_since = dict(decision.unneeded_since)
        self._absent_since = dict(decision.absent_since)
        self._log_infeasible(decision)
        step = _Iteration(now)
        if self.dry_run:
            for action in decision.actions:
                log.info("would %s %s (%s): %s", action.kind.value, ", ".join(action.ips),
                         action.event.value, action.reason)
            step.acted = list(decision.actions)
        else:
            self._act(decision, machines, step)
            if claim is not None and self.claims is not None and (
                    claim.ended or now - claim.at > self.config.provision_timeout_s):
                # Ended and applied, or expired: it holds nothing any more. An open claim
                # stays, read every iteration: `up` still runs, and an agent restarted, or a
                # store made anew (--rebuild-state, a removed state file), sees it too.
                self.claims.consume(claim)
        report = IterationReport(
            now=now, demand=demand, decision=decision, acted=tuple(step.acted),
            held=tuple(step.held), started=tuple(step.started), finished=tuple(finished),
            duration_s=self._monotonic() - started, dry_run=self.dry_run)
        self._report(report)
        return report

    def stop(self, now: float, wait_s: float = 30.0) -> list[RunResult]:
        """Cancel the running playbooks, wait for them to end, record how they ended."""
        if self.dry_run or self.runner is None:
            return []
        running = self.runner.running()
        if running:
            log.info("stopping: canceling %s", ", ".join(running))
            self.runner.cancel_all()
            if not self.runner.wait(wait_s):
                log.warning("stopping: runs still running after %.0f s: %s", wait_s,
                            ", ".join(self.runner.running()))
        return self.collect_runs(now)

    # ------------------------------------------------------------ observe

    def _machines(self) -> dict[str, Machine]:
        return self.store.machines()

    def _runner(self) -> PlaybookRunner:
        if self.runner is None:
            raise RuntimeError("this agent runs no playbooks (dry run)")
        return self.runner

    def busy(self) -> dict[str, str]:
        """IP -> request id of the unfinished run that has it (what `up` must not claim)."""
        return self._busy()

    def _busy(self) -> dict[str, str]:
        """IP -> request id of the unfinished run that has it."""
        return {ip: run.request_id for run in self.store.runs(limit=1_000_000,
                                                              unfinished_only=True)
                for ip in run.ips}

    def collect_runs(self, now: float) -> list[RunResult]:
        """Record the runs that ended since the last call."""
        results = self._runner().poll()
        for result in results:
            self._record_result(result, now)
        return results

    def _ray_unavailable(self, now: float, error: str) -> None:
        if self._ray_down_since is None:
            self._ray_down_since = now
            log.warning("Ray's GCS cannot be asked, deciding nothing until it answers: %s",
                        error)
        else:
            log.debug("Ray's GCS still cannot be asked: %s", error)

    def _track_demand(self, demand: DemandSnapshot, now: float) -> None:
        if has_demand(demand):
            if self._demand_since is None:
                self._demand_since = now
        else:
            self._demand_since = None

    def _log_infeasible(self, decision: Decision) -> None:
        for item in decision.newly_infeasible(self._reported_infeasible):
            log.warning("infeasible %s %s x%d: %s", item.kind.value, item.demand, item.count,
                        item.reason)
        # forget what went away, so that it is reported again if it comes back
        self._reported_infeasible = {item.key for item in decision.infeasible}

    # ------------------------------------------------------------ act

    def _act(self, decision: Decision, machines: dict[str, Machine], step: _Iteration) -> None:
        records = dict(machines)
        busy = self._busy()
        with self.store.transaction():
            for action in decision.actions:
                if action.kind not in (ActionKind.ADD, ActionKind.RETIRE, ActionKind.CANCEL):
                    self._bookkeeping(action, records, busy, step)
        for action in decision.actions:
            if action.kind in (ActionKind.ADD, ActionKind.RETIRE):
                self._start_run(action, records, busy, step)
            elif action.kind == ActionKind.CANCEL:
                self._cancel_run(action, busy, step)

    def _bookkeeping(self, action: Action, records: dict[str, Machine],
                     busy: Mapping[str, str], step: _Iteration) -> None:
        ips = []
        for ip in action.ips:
            if action.event in _LEFT_TO_THE_RUN and ip in busy:
                step.held.append(f"{ip}: {action.event.value} left to run {busy[ip]}, "
                                 "which is still running")
                continue
            try:
                if action.kind == ActionKind.ADMIT:
                    machine = transitions.admit(ip, action.node_type, step.now, action.reason)
                    if ip in records:
                        raise transitions.IllegalTransition(f"{ip} is already recorded")
                    self.store.put(machine)
                else:
                    # a claim's id becomes the machine's (CLAIMED); other marks keep theirs
                    machine = self._apply(records.get(ip), action.event, step.now,
                                          reason=action.reason, request_id=action.request_id)
            except transitions.IllegalTransition as err:  # an earlier part was held
                step.held.append(f"{ip}: {action.kind.value} held: {err}")
                continue
            if machine is None:
                records.pop(ip, None)
            else:
                records[ip] = machine
            self._joined(ip, action.event, step.now)
            ips.append(ip)
        self._acted(action, ips, step)

    def _start_run(self, action: Action, records: dict[str, Machine], busy: dict[str, str],
                   step: _Iteration) -> None:
        runner = self._runner()
        pool = self.pool  # a set of every machine: made once, not once per IP
        ips = []
        for ip in action.ips:
            if ip in busy:
                step.held.append(f"{ip}: not in a new {action.kind.value} run while run "
                                 f"{busy[ip]} has it")
            elif ip not in records or (records[ip].state, action.event) not in \
                    transitions.TRANSITIONS:
                state = records[ip].state.value if ip in records else "not recorded"
                step.held.append(f"{ip}: {action.kind.value} held: it is {state}")
            elif ip not in pool and not self._reach(action, records[ip], step):
                step.held.append(f"{ip}: {action.kind.value} refused: not in the inventory, "
                                 "so the playbooks cannot reach it; put it back in the "
                                 "inventory to retire it, or stop Ray on it by hand")
            else:
                ips.append(ip)
        if not ips:
            return
        request_id = action.request_id
        if self.store.run(request_id) is not None:  # the same decision twice at one `now`
            request_id = f"{request_id}-{len(self.store.runs(limit=1_000_000))}"
        with self.store.transaction():
            for ip in ips:
                records[ip] = self._apply(records[ip], action.event, step.now,
                                          reason=action.reason, request_id=request_id)
            self.store.start_run(request_id, action.kind.value, ips, step.now)
        busy.update(dict.fromkeys(ips, request_id))
        if action.kind == ActionKind.ADD:
            for ip in ips:
                self._add_demand_seen[ip] = self._demand_since or step.now
        try:
            runner.start(request_id, PLAYBOOKS[action.kind.value], ips,
                              **self._run_settings(action))
        except Exception as err:  # the run never started: its machines must not wait on it
            log.error("run %s (%s on %s) could not start: %s", request_id, action.kind.value,
                      ", ".join(ips), err)
            self._record_result(RunResult(
                request_id=request_id, playbook=PLAYBOOKS[action.kind.value], ips=tuple(ips),
                status="failed", rc=None, hosts=dict.fromkeys(ips, "failed"),
                errors=dict.fromkeys(ips, f"the playbook could not start: {err}")), step.now)
            return
        step.started.append(request_id)
        self._acted(action, ips, step, request_id)

    def _cancel_run(self, action: Action, busy: Mapping[str, str], step: _Iteration) -> None:
        """Ask the runner to cancel an add run; its machines change when it ends (poll)."""
        run = self.store.run(action.request_id)
        if run is None or run.finished is not None or run.kind != ActionKind.ADD.value:
            step.held.append(f"run {action.request_id}: not canceled, it is no add run "
                             "still running")
            return
        if action.request_id in self._cancel_asked:
            log.debug("run %s: cancel asked already, waiting for it to end", action.request_id)
            return
        ips = [ip for ip in action.ips if busy.get(ip) == action.request_id]
        self._runner().cancel(action.request_id)
        self._cancel_asked.add(action.request_id)
        self._acted(action, ips, step, action.request_id)

    def _reach(self, action: Action, machine: Machine, step: _Iteration) -> bool:
        """A machine gone from the inventory may still be retired (never added), when the
        runner can reach it with what the inventory says of its node type."""
        if action.kind != ActionKind.RETIRE or self.runner is None:
            return False
        try:
            return bool(self.runner.reach(machine.ip, machine.node_type))
        except ValueError as err:
            step.held.append(f"{machine.ip}: {err}")
            return False

    def _run_settings(self, action: Action) -> dict[str, Any]:
        config = self.config
        if action.kind == ActionKind.ADD:
            return {"timeout_s": config.provision_timeout_s}
        # An idle node must stay idle to be drained (Ray refuses otherwise); a node that is
        # over a limit or leaves the inventory goes even if busy, its work moving elsewhere.
        reason = "idle" if action.event == Event.IDLE_EXPIRED else "preemption"
        return {"extravars": {"worker_drain_reason": reason,
                              "worker_drain_timeout": max(1, int(config.drain_deadline_s))},
                "timeout_s": config.drain_deadline_s + RETIRE_STOP_MARGIN_S}

    def _acted(self, action: Action, ips: list[str], step: _Iteration,
               request_id: str = "") -> None:
        if not ips:
            return
        done = Action(kind=action.kind, event=action.event, ips=tuple(ips),
                      node_type=action.node_type, reason=action.reason,
                      request_id=request_id or action.request_id)
        step.acted.append(done)
        run = f" [run {request_id}]" if request_id else ""
        log.info("%s %s (%s): %s%s", action.kind.value, ", ".join(ips), action.event.value,
                 action.reason, run)
        if self.metrics is not None:
            self.metrics.action(action.kind.value, len(ips))

    def _apply(self, machine: Machine | None, event: Event, now: float, *, reason: str,
               error: str = "", request_id: str = "") -> Machine | None:
        """Apply one event and write the result (None: the record is forgotten)."""
        if machine is None:
            raise transitions.IllegalTransition(f"{event.value}: no record")
        after = transitions.apply(machine, event, now, reason=reason, error=error,
                                  request_id=request_id, backoff=self.config.backoff)
        if after is None:
            self.store.forget(machine.ip)
        else:
            self.store.put(after)
        return after

    def _joined(self, ip: str, event: Event, now: float) -> None:
        seen = self._add_demand_seen.pop(ip, None)
        if seen is not None and event == Event.JOINED and self.metrics is not None:
            self.metrics.scale_up_latency(now - seen)

    # ------------------------------------------------------------ record

    def _record_result(self, result: RunResult, now: float) -> None:
        """A run ended: record it and apply what it means to each of its machines."""
        self._cancel_asked.discard(result.request_id)
        run = self.store.run(result.request_id)
        if run is None or run.finished is not None:
            log.warning("run %s ended (%s) but the store has no unfinished run of that id",
                        result.request_id, result.status)
            return
        with self.store.transaction():
            self.store.finish_run(result.request_id, now, result.status, result.hosts,
                                  _summary(result))
            for ip in run.ips:
                self._apply_outcome(run.kind, ip, result, now)
        for ip in run.ips:
            outcome = result.hosts.get(ip, "no result")
            error = result.errors.get(ip, "")
            line = f"run {result.request_id} ({run.kind}) {result.status}: {ip} {outcome}"
            if error:
                log.warning("%s: %s", line, error.replace("\n", " | "))
            else:
                log.info("%s", line)
        if self.metrics is not None:
            self.metrics.run_finished(result.playbook or PLAYBOOKS.get(run.kind, run.kind),
                                      result.status, result.duration_s)

    def _apply_outcome(self, kind: str, ip: str, result: RunResult, now: float) -> None:
        machine = self.store.machine(ip)
        if machine is None:
            log.info("run %s: %s is no longer in the store", result.request_id, ip)
            return
        if machine.request_id != result.request_id:
            log.info("run %s: %s was since touched by run %s; its result does not apply",
                     result.request_id, ip, machine.request_id or "none")
            return
        for step in outcomes.steps(kind, ip, result, self.config.provision_timeout_s):
            if (machine.state, step.event) not in transitions.TRANSITIONS:
                log.info("run %s: %s is %s now; %s no longer applies", result.request_id, ip,
                         machine.state.value, step.event.value)
                return
            machine = self._apply(machine, step.event, now, reason=step.reason,
                                  error=step.error)
            if step.event in transitions.FAILURE_EVENTS:
                self._add_demand_seen.pop(ip, None)
                log.warning("%s %s: %s", ip, step.event.value, step.reason)
            if machine is None:
                return

    def _report(self, report: IterationReport) -> None:
        for line in report.held:
            log.info("held: %s", line)
        if self.metrics is not None:
            self.metrics.iteration(report, self._machines().values(), self.config)


def _summary(result: RunResult) -> str:
    lines = [f"{ip}: {result.errors[ip]}" for ip in result.ips if ip in result.errors]
    text = "\n".join(lines) or result.output_tail
    return text if len(text) <= _RUN_SUMMARY_CHARS else "..." + text[-_RUN_SUMMARY_CHARS:]
