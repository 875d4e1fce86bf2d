"""The agent's settings file: what it accepts and refuses, and that the service applies it at
start and again on SIGHUP."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from loop_fakes import FakeRay, FakeRunner
from test_service import CPU, cluster_file, options, until  # noqa: F401 (fixture)

from onprem_ray_agent.service import Signals, run
from onprem_ray_agent.settings import DEFAULT_INTERVAL_S, Settings, SettingsError, load_settings

PATH = Path("/etc/onprem-ray/agent.yml")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yml"
    path.write_text(text)
    return path


def test_every_setting_is_read_with_its_type(tmp_path):
    path = write(tmp_path, """
        interval_s: 2
        max_concurrent_launches: 3
        provision_timeout_s: 120
        backoff_base_s: 10.5
        backoff_max_s: 60
        quarantine_after_failures: 0
        drain_deadline_s: 30
        cancel_join_after_s: 45
    """.replace("\n        ", "\n"))
    settings = load_settings(path)
    assert settings.interval_s == 2.0
    assert settings.decision == {
        "max_concurrent_launches": 3, "provision_timeout_s": 120.0, "backoff_base_s": 10.5,
        "backoff_max_s": 60.0, "quarantine_after_failures": 0, "drain_deadline_s": 30.0,
        "cancel_join_after_s": 45.0}
    assert isinstance(settings.decision["max_concurrent_launches"], int)
    assert isinstance(settings.decision["provision_timeout_s"], float)


def test_an_empty_file_keeps_every_default(tmp_path):
    assert load_settings(write(tmp_path, "# nothing set\n")) == Settings()
    assert Settings().interval_s == DEFAULT_INTERVAL_S


@pytest.mark.parametrize(("text", "message"), [
    ("provision_timeout: 60\n", "unknown setting 'provision_timeout' (did you mean "
                                "provision_timeout_s?)"),
    ("colour: blue\n", "unknown setting 'colour'; known: interval_s,"),
    ("provision_timeout_s: soon\n", "provision_timeout_s must be a number, got 'soon'"),
    ("drain_deadline_s: true\n", "drain_deadline_s must be a number, got True"),
    ("max_concurrent_launches: 2.5\n", "max_concurrent_launches must be a whole number"),
    ("backoff_base_s: -1\n", "backoff_base_s must be a finite number >= 0, got -1.0"),
    ("backoff_max_s: .inf\n", "backoff_max_s must be a finite number >= 0, got inf"),
    ("quarantine_after_failures: -2\n", "quarantine_after_failures must be >= 0"),
    ("interval_s: 0\n", "interval_s must be a finite number > 0, got 0.0"),
    ("cancel_join_after_s: 0\n", "cancel_join_after_s must be a finite number > 0 (to never "
                                 "cancel a join, set it above provision_timeout_s), got 0.0"),
    ("cancel_join_after_s: -5\n", "cancel_join_after_s must be a finite number > 0"),
    ("- interval_s\n", "expected a mapping of settings, got list"),
    ("interval_s: [\n", "not YAML"),
])
def test_a_bad_file_is_refused_naming_the_file_the_key_and_the_value(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(SettingsError) as raised:
        load_settings(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert message in str(raised.value)


def test_a_missing_file_is_refused_with_its_path(tmp_path):
    with pytest.raises(SettingsError, match=f"settings file {tmp_path}/none.yml: No such file"):
        load_settings(tmp_path / "none.yml")


def test_a_refused_settings_file_stops_the_start_with_its_reason(tmp_path, cluster_file,  # noqa: F811
                                                                  caplog):
    settings = write(tmp_path, "drain_deadline_s: -5\n")
    assert run(options(tmp_path, cluster_file, once=True, settings_file=settings),
               signals=Signals(), ray=FakeRay()) == 2
    assert f"{settings}: drain_deadline_s must be a finite number >= 0" in caplog.text


def test_the_service_applies_the_settings_at_start_and_on_sighup(tmp_path, cluster_file,  # noqa: F811
                                                                  caplog):
    """No launch at all allowed at start: demand starts nothing. The same file with launches
    allowed, and SIGHUP: the add starts. A bad file on SIGHUP keeps the settings in force."""
    settings = write(tmp_path, "interval_s: 0.05\nmax_concurrent_launches: 0\n")
    signals, ray = Signals(), FakeRay()
    runner = FakeRunner(pool=frozenset(CPU))
    ray.want(1, CPU=4)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(run(
        options(tmp_path, cluster_file, settings_file=settings), signals=signals, ray=ray,
        runner=runner)))
    thread.start()
    try:
        status = tmp_path / "state" / "status.json"
        until(lambda: "max_concurrent_launches 0" in status.read_text()
              if status.is_file() else False)
        assert runner.running() == []
        settings.write_text("interval_s: 0.05\nmax_concurrent_launches: 1\n")
        signals.reload.set()
        until(lambda: len(runner.running()) == 1)
        settings.write_text("interval_s: 0.05\nmax_concurrent_launches: many\n")
        signals.reload.set()
        until(lambda: "keeping the previous settings" in caplog.text)
        assert f"{settings}: max_concurrent_launches must be a number" in caplog.text
        assert thread.is_alive()
    finally:
        signals.stop.set()
        thread.join(30)
    assert codes == [0]
