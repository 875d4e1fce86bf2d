"""The agent as a process: wiring, the timed loop, signals.

SIGHUP: the cluster file is read again before the next iteration (a file that fails validation
is logged and the old settings kept). SIGTERM or SIGINT: the running playbooks are canceled,
their end is recorded, and the process exits 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from onprem_ray_agent.adapters.ray_state import GcsRayState
from onprem_ray_agent.adapters.runner import AnsibleRunner, PlaybookRunner, ansible_environment
from onprem_ray_agent.config import ConfigError, LoadedConfig, collection_dir, load_config
from onprem_ray_agent.history import HistoryRecorder
from onprem_ray_agent.loop import RETIRE_STOP_MARGIN_S, Agent, IterationReport, RayState
from onprem_ray_agent.metrics import DEFAULT_PORT, AgentMetrics
from onprem_ray_agent.status import write_status_file
from onprem_ray_agent.store import StateStore, StoreDamaged, StoreError

log = logging.getLogger("onprem_ray_agent")

STATE_DB = "state.db"
RUNNER_DIR = "runner"


@dataclass(frozen=True)
class Options:
    cluster_file: Path
    state_dir: Path
    gcs_address: str
    interval_s: float = 5.0
    once: bool = False
    dry_run: bool = False
    metrics_address: str | None = None  # None: the head's address from the cluster file
    metrics_port: int = DEFAULT_PORT  # 0: no metrics endpoint
    rebuild_state: bool = False  # rebuild the state store from Ray and the inventory, exit


class Signals:
    """Flags set by signal handlers, read by the loop between iterations."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.reload = threading.Event()

    def install(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload.set())


@contextlib.contextmanager
def _store(options: Options) -> Iterator[StateStore]:
    """The state store: locked for an agent that acts; read-only (or an empty scratch one
    when none exists yet) for a dry run, which may run beside the real agent."""
    path = options.state_dir / STATE_DB
    if not options.dry_run:
        store = StateStore.open(path)
    elif path.is_file():
        store = StateStore.open_read_only(path)
    else:
        with tempfile.TemporaryDirectory() as scratch:
            store = StateStore.open(Path(scratch) / STATE_DB)
            try:
                yield store
            finally:
                store.close()
        return
    try:
        yield store
    finally:
        store.close()


def _print_dry(report: IterationReport, echo: Callable[[str], None]) -> None:
    if report.ray_error:
        echo(f"Ray unavailable, nothing decided: {report.ray_error}")
        return
    decision = report.decision
    if decision is None or not decision.actions:
        echo("no actions")
    for action in report.acted:
        echo(f"would {action.kind.value} {', '.join(action.ips)} ({action.event.value}): "
             f"{action.reason}")
    for item in decision.infeasible if decision else ():
        echo(f"infeasible: {item.count} x {item.demand}: {item.reason}")
    for note in decision.notes if decision else ():
        echo(f"note: {note}")


def _reload(options: Options, current: LoadedConfig) -> LoadedConfig:
    try:
        loaded = load_config(options.cluster_file)
    except ConfigError as err:
        log.error("SIGHUP: keeping the previous settings, the cluster file is refused: %s", err)
        return current
    log.info("SIGHUP: cluster file %s read again (%d machines in the pool)", loaded.path,
             len(loaded.pool))
    return loaded


def run(options: Options, *, signals: Signals | None = None, ray: RayState | None = None,
        runner: PlaybookRunner | None = None, echo: Callable[[str], None] = print) -> int:
    """The agent until stopped (or one iteration with `once`). Returns the exit status.
    `signals`, `ray` and `runner` replace the real ones (tests)."""
    if signals is None:
        signals = Signals()
        signals.install()
    try:
        loaded = load_config(options.cluster_file)
    except ConfigError as err:
        log.error("%s", err)
        return 2
    if options.rebuild_state:
        from onprem_ray_agent.rebuild import rebuild_command

        return rebuild_command(options.state_dir / STATE_DB, loaded.config,
                               ray or GcsRayState(options.gcs_address), echo)
    try:
        with _store(options) as store:
            return _serve(options, loaded, store, signals, ray, runner, echo)
    except StoreDamaged as err:  # refuses to act until rebuilt (the message says how)
        log.error("%s", err)
        return 4
    except StoreError as err:  # another agent holds the store, it cannot be read, disk full
        log.error("%s", err)
        return 3


def _serve(options: Options, loaded: LoadedConfig, store: StateStore, signals: Signals,
           ray: RayState | None, runner: PlaybookRunner | None,
           echo: Callable[[str], None]) -> int:
    if options.dry_run:
        runner = None
    elif runner is None:
        runner = AnsibleRunner(options.state_dir / RUNNER_DIR, loaded.path, loaded.pool,
                               envvars=ansible_environment(collection_dir(), os.environ),
                               leaving_hostvars=loaded.hostvars_of_leaving)
    metrics = AgentMetrics()
    server = None
    if options.metrics_port and not options.once:
        address = options.metrics_address or loaded.config.head_ip
        server = metrics.serve(address, options.metrics_port)
        log.info("metrics on http://%s:%d/metrics", address, options.metrics_port)
    agent = Agent(loaded.config, store, ray or GcsRayState(options.gcs_address), runner,
                  metrics=metrics, dry_run=options.dry_run)
    history = HistoryRecorder(options.state_dir, loaded.config.head_ip)
    try:
        if not options.dry_run:
            agent.reconcile(time.time())
        log.info("agent started: %d machines in the pool, state in %s%s", len(loaded.pool),
                 options.state_dir, " (dry run: acting on nothing)" if options.dry_run else "")
        while not signals.stop.is_set():
            if signals.reload.is_set():
                signals.reload.clear()
                loaded = _reload(options, loaded)
                agent.reconfigure(loaded.config)
                if runner is not None:
                    runner.set_pool(loaded.pool, loaded.path, loaded.hostvars_of_leaving)
            try:
                report = agent.iterate(time.time())
            except StoreError:  # nothing can be recorded: act on nothing more, exit
                if runner is not None:  # their ends are read back from the artifacts later
                    runner.cancel_all()
                raise
            except Exception:  # the next iteration starts from the store and Ray again
                log.exception("iteration failed")
            else:
                if options.dry_run:
                    _print_dry(report, echo)
                else:
                    write_status_file(options.state_dir, report,
                                      cluster_file=str(loaded.path),
                                      gcs_address=options.gcs_address)
                    if report.demand is not None:
                        history.record(report.now, report.demand)
            if options.once:
                _finish_started_runs(agent, runner, loaded, signals)
                break
            signals.stop.wait(options.interval_s)
        if not options.dry_run:
            agent.stop(time.time())
        log.info("agent stopped")
        return 0
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()


def _finish_started_runs(agent: Agent, runner: PlaybookRunner | None, loaded: LoadedConfig,
                         signals: Signals) -> None:
    """--once: wait for the playbooks the iteration started, and record how they ended."""
    if runner is None:
        return
    config = loaded.config
    deadline = time.monotonic() + max(config.provision_timeout_s,
                                      config.drain_deadline_s + RETIRE_STOP_MARGIN_S)
    while runner.running() and not signals.stop.is_set() and time.monotonic() < deadline:
        signals.stop.wait(0.5)
    agent.collect_runs(time.time())
