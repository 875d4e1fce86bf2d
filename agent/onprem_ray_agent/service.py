"""The agent as a process: wiring, the timed loop, signals.

SIGHUP: the cluster file and the settings file are read again before the next iteration (when
either fails validation, the error is logged and both are kept as they were). SIGTERM or SIGINT:
the running playbooks are canceled, their end is recorded, and the process exits 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from onprem_ray_agent.adapters.ray_state import GcsRayState
from onprem_ray_agent.adapters.runner import AnsibleRunner, PlaybookRunner, ansible_environment
from onprem_ray_agent.claims import ClaimBox
from onprem_ray_agent.config import ConfigError, LoadedConfig, collection_dir, load_config
from onprem_ray_agent.history import HistoryRecorder
from onprem_ray_agent.loop import RETIRE_STOP_MARGIN_S, Agent, IterationReport, RayState
from onprem_ray_agent.metrics import DEFAULT_PORT, AgentMetrics
from onprem_ray_agent.settings import Settings, SettingsError, load_settings
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
    settings_file: Path | None = None  # None: every setting at its default
    interval_s: float | None = None  # given: wins over the settings file's interval_s
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


def _load(options: Options) -> tuple[LoadedConfig, Settings]:
    """The cluster file with the settings file's decision settings; ConfigError or
    SettingsError say what is refused."""
    settings = Settings() if options.settings_file is None else load_settings(
        options.settings_file)
    return load_config(options.cluster_file, **settings.decision), settings


def _interval(options: Options, settings: Settings) -> float:
    return settings.interval_s if options.interval_s is None else options.interval_s


def _reload(options: Options, current: tuple[LoadedConfig, Settings]
            ) -> tuple[LoadedConfig, Settings]:
    try:
        loaded, settings = _load(options)
    except (ConfigError, SettingsError) as err:
        log.error("SIGHUP: keeping the previous settings (cluster file and settings file): %s", err)
        return current
    log.info("SIGHUP: cluster file %s read again (%d machines in the pool)%s", loaded.path,
             len(loaded.pool),
             f", settings {options.settings_file} too" if options.settings_file else "")
    return loaded, settings


def _notify_systemd(message: str) -> None:
    """Tell systemd (a Type=notify unit) how the agent is: `systemctl start` returns at
    READY=1, and fails when the agent exits before. Nothing outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as err:
        log.warning("could not tell systemd %s: %s", message, err)


def run(options: Options, *, signals: Signals | None = None, ray: RayState | None = None,
        runner: PlaybookRunner | None = None, echo: Callable[[str], None] = print) -> int:
    """The agent until stopped (or one iteration with `once`). Returns the exit status.
    `signals`, `ray` and `runner` replace the real ones (tests)."""
    if signals is None:
        signals = Signals()
        signals.install()
    try:
        loaded, settings = _load(options)
    except (ConfigError, SettingsError) as err:
        log.error("%s", err)
        return 2
    if options.rebuild_state:
        from onprem_ray_agent.rebuild import rebuild_command

        return rebuild_command(options.state_dir / STATE_DB, loaded.config,
                               ray or GcsRayState(options.gcs_address), echo)
    try:
        with _store(options) as store:
            return _serve(options, loaded, settings, store, signals, ray, runner, echo)
    except StoreDamaged as err:  # refuses to act until rebuilt (the message says how)
        log.error("%s", err)
        return 4
    except StoreError as err:  # another agent holds the store, it cannot be read, disk full
        log.error("%s", err)
        return 3


def _serve(options: Options, loaded: LoadedConfig, settings: Settings, store: StateStore,
           signals: Signals,
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
    claims = ClaimBox(options.state_dir)
    agent = Agent(loaded.config, store, ray or GcsRayState(options.gcs_address), runner,
                  metrics=metrics, dry_run=options.dry_run, claims=claims)
    history = HistoryRecorder(options.state_dir, loaded.config.head_ip)
    # `up`'s claim is read, and the agent's runs started and published, under the claim lock
    # (a dry run only reads the claim).
    hold = contextlib.nullcontext if options.dry_run else claims.locked
    try:
        if not options.dry_run:
            with claims.locked():
                agent.reconcile(time.time())
                claims.publish(agent.busy())
        log.info("agent started: %d machines in the pool, state in %s%s", len(loaded.pool),
                 options.state_dir, " (dry run: acting on nothing)" if options.dry_run else "")
        _notify_systemd("READY=1")
        while not signals.stop.is_set():
            if signals.reload.is_set():
                signals.reload.clear()
                loaded, settings = _reload(options, (loaded, settings))
                agent.reconfigure(loaded.config)
                if runner is not None:
                    runner.set_pool(loaded.pool, loaded.path, loaded.hostvars_of_leaving)
            try:
                with hold():
                    report = agent.iterate(time.time())
                    if not options.dry_run:
                        claims.publish(agent.busy())
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
                                      gcs_address=options.gcs_address,
                                      settings_file=str(options.settings_file or ""))
                    if report.demand is not None:
                        history.record(report.now, report.demand)
            if options.once:
                _finish_started_runs(agent, runner, loaded, signals)
                break
            signals.stop.wait(_interval(options, settings))
        if not options.dry_run:
            with claims.locked():
                agent.stop(time.time())
                claims.publish(agent.busy())
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
