"""The ansible-runner adapter, run for real: tiny playbooks against this machine
(ansible_connection=local) and an address where nothing listens (unreachable)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from onprem_ray_agent.adapters.runner import (
    FAILED,
    OK,
    RUN_MARKER,
    UNREACHABLE,
    AnsibleRunner,
    PoolViolation,
    RunConflict,
    ansible_environment,
    end_run_processes,
    run_processes,
)

GOOD, BAD, DOWN, ABSENT = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"

PLAYBOOK = """
    - name: Tiny
      hosts: all
      gather_facts: false
      tasks:
        - name: Say hello
          ansible.builtin.command: echo hello
          changed_when: false
        - name: Break on the bad host
          ansible.builtin.command: sh -c 'echo out-{{ marker }}; echo err-{{ marker }} >&2; exit 3'
          when: inventory_hostname == '127.0.0.3'
        - name: Wait
          ansible.builtin.command: sleep {{ pause }}
          changed_when: false
"""


@pytest.fixture
def setup(tmp_path):
    playbook = tmp_path / "tiny.yml"
    playbook.write_text(textwrap.dedent(PLAYBOOK))
    inventory = tmp_path / "hosts.ini"
    python = sys.executable
    inventory.write_text(textwrap.dedent(f"""
        {GOOD} ansible_connection=local ansible_python_interpreter={python}
        {BAD} ansible_connection=local ansible_python_interpreter={python}
        {DOWN} ansible_host=127.0.0.1 ansible_port=1 ansible_connection=ssh
    """))
    runner = AnsibleRunner(tmp_path / "runner", inventory, {GOOD, BAD, DOWN, ABSENT},
                           envvars=ansible_environment(tmp_path, os.environ),
                           cancel_check_s=0.2)
    return runner, str(playbook)


def wait_for(runner: AnsibleRunner, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        results = runner.poll()
        if results:
            return results
        time.sleep(0.2)
    raise AssertionError("the run did not end")


def test_hosts_ok_failed_and_unreachable_with_the_failing_output(setup):
    runner, playbook = setup
    runner.start("run-1", playbook, [GOOD, BAD, DOWN], extravars={"marker": "x", "pause": 0})
    assert runner.running() == ["run-1"]
    (result,) = wait_for(runner)
    assert runner.running() == []
    assert (result.request_id, result.playbook, result.status) == ("run-1", playbook, "failed")
    assert result.rc not in (0, None)
    assert dict(result.hosts) == {GOOD: OK, BAD: FAILED, DOWN: UNREACHABLE}
    assert result.failed_tasks[BAD] == "Break on the bad host"
    assert "out-x" in result.errors[BAD] and "err-x" in result.errors[BAD]
    assert "Say hello" in result.errors[DOWN] and "port 1" in result.errors[DOWN]
    assert GOOD not in result.errors
    assert result.duration_s is not None and result.duration_s > 0


def test_a_finished_run_reads_back_from_its_artifacts(setup):
    runner, playbook = setup
    runner.start("run-2", playbook, [GOOD, BAD], extravars={"marker": "y", "pause": 0})
    deadline = time.monotonic() + 120
    while runner.running():  # until it ended; poll() then reports it
        assert time.monotonic() < deadline
        time.sleep(0.1)
    (live,) = runner.poll()
    restarted = AnsibleRunner(runner.private_data_dir, runner.inventory, runner.pool)
    again = restarted.recorded("run-2")
    assert again is not None
    assert (again.playbook, again.ips, again.status, again.rc) == (
        playbook, (GOOD, BAD), live.status, live.rc)
    assert dict(again.hosts) == dict(live.hosts) == {GOOD: OK, BAD: FAILED}
    assert again.errors[BAD] == live.errors[BAD]
    assert restarted.recorded("never-ran") is None


def test_each_run_gets_its_own_variables(setup):
    runner, playbook = setup
    for marker in ("first", "second"):
        runner.start(f"run-{marker}", playbook, [BAD], extravars={"marker": marker, "pause": 0})
        (result,) = wait_for(runner)
        assert f"out-{marker}" in result.errors[BAD]


def test_a_successful_run_without_a_host_in_the_inventory_fails_that_host(setup):
    runner, playbook = setup
    runner.start("run-3", playbook, [GOOD, ABSENT], extravars={"marker": "z", "pause": 0})
    (result,) = wait_for(runner)
    assert result.hosts[GOOD] == OK
    assert result.hosts[ABSENT] == FAILED
    assert "no result for 127.0.0.5" in result.errors[ABSENT]


@pytest.mark.parametrize("ips", [
    ["10.9.9.9"],  # not in the pool
    [GOOD, "all"],  # a pattern, not a host
    [GOOD, GOOD],
    [],
])
def test_nothing_outside_the_pool_reaches_the_limit(setup, ips):
    runner, playbook = setup
    with pytest.raises(PoolViolation):
        runner.start("refused", playbook, ips)
    assert runner.running() == []
    assert not (runner.private_data_dir / "artifacts" / "refused").exists()


def test_a_new_pool_applies_to_the_next_run(setup):
    runner, playbook = setup
    runner.set_pool({BAD})
    with pytest.raises(PoolViolation, match=GOOD):
        runner.start("old-pool", playbook, [GOOD])


def test_a_machine_gone_from_the_inventory_is_reachable_for_retirement_only(tmp_path, setup):
    runner, playbook = setup
    gone = "127.0.0.6"
    retire = AnsibleRunner(
        tmp_path / "retire-runner", runner.inventory, {GOOD},
        envvars=runner.envvars, retire_playbook=playbook,
        leaving_hostvars=lambda address, node_type: {
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "marker_type": node_type})
    assert not AnsibleRunner(tmp_path / "r2", runner.inventory, {GOOD}).reach(gone, "cpu")
    assert retire.reach(gone, "cpu")
    with pytest.raises(PoolViolation, match=gone):
        retire.start("add-gone", "add.yml", [gone])  # never added: only retired
    retire.start("retire-gone", playbook, [GOOD, gone], extravars={"marker": "r", "pause": 0})
    (result,) = wait_for(retire)
    assert dict(result.hosts) == {GOOD: OK, gone: OK}
    retire.set_pool({GOOD})  # a new cluster file: what was reachable must be asked again
    with pytest.raises(PoolViolation, match=gone):
        retire.start("retire-again", playbook, [gone])


def sleeping(seconds: int) -> list[int]:
    """The `sleep <seconds>` processes on this machine."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[:2] == [b"sleep", str(seconds).encode()]:
            found.append(int(entry.name))
    return found


def test_cancel_stops_the_run_and_a_host_is_never_in_two_runs(setup):
    runner, playbook = setup
    pause = 61 + os.getpid() % 1000  # a sleep no other test runs
    runner.start("slow", playbook, [GOOD], extravars={"marker": "s", "pause": pause})
    with pytest.raises(RunConflict, match="slow"):
        runner.start("second", playbook, [GOOD, BAD], extravars={"marker": "s", "pause": 0})
    deadline = time.monotonic() + 60
    while not sleeping(pause) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sleeping(pause), "the run's task never started"
    started = time.monotonic()
    runner.cancel_all()
    (result,) = wait_for(runner, timeout_s=30)
    assert result.status == "canceled"
    assert time.monotonic() - started < 20
    assert GOOD not in result.hosts  # no outcome: the run did not get to say
    assert runner.recorded("slow").status == "canceled"
    # Nothing of the run is left: not the task that ansible-core's worker (a session of its
    # own, out of the reach of ansible-runner's kill) was running.
    assert sleeping(pause) == []
    assert run_processes("slow") == set()


def test_end_run_processes_kills_the_runs_process_tree_and_nothing_else(tmp_path):
    # A run's process that forks a child into a session of its own (as ansible-core's
    # workers do), whose child hides nothing; and a bystander without the marker.
    script = ("import os, subprocess, sys, time\n"
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'],"
              " start_new_session=True)\n"
              "time.sleep(300)\n")
    env = {**os.environ, RUN_MARKER: "run-a"}
    parent = subprocess.Popen([sys.executable, "-c", script], env=env)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                                 env={**os.environ, RUN_MARKER: "run-b"})
    try:
        deadline = time.monotonic() + 30
        while len(run_processes("run-a")) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        tree = run_processes("run-a")
        assert parent.pid in tree and len(tree) == 2, tree
        assert run_processes("run-b") == {bystander.pid}
        assert end_run_processes("run-a") == 2
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while run_processes("run-a") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert run_processes("run-a") == set()
        assert bystander.poll() is None  # another run's process is left alone
    finally:
        for process in (parent, bystander):
            process.kill()
            process.wait(timeout=10)


def test_host_keys_are_checked_unless_the_environment_says_otherwise(tmp_path):
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("")
    assert AnsibleRunner(tmp_path / "r1", inventory, set()).envvars[
        "ANSIBLE_HOST_KEY_CHECKING"] == "True"
    given = AnsibleRunner(tmp_path / "r2", inventory, set(),
                          envvars={"ANSIBLE_HOST_KEY_CHECKING": "False"})
    assert given.envvars["ANSIBLE_HOST_KEY_CHECKING"] == "False"


def test_ansible_environment_finds_a_checkout_and_an_installed_collection(tmp_path):
    checkout = tmp_path / "repo"
    checkout.mkdir()
    (checkout / "ansible.cfg").write_text("[defaults]\n")
    env = ansible_environment(checkout, {"PATH": "/usr/bin"})
    assert env["ANSIBLE_CONFIG"] == str(checkout / "ansible.cfg")
    assert env["PATH"].split(os.pathsep) == [str(Path(sys.executable).parent), "/usr/bin"]
    installed = tmp_path / "colls" / "ansible_collections" / "onprem" / "ray"
    installed.mkdir(parents=True)
    env = ansible_environment(installed, {"PATH": str(Path(sys.executable).parent)})
    assert env == {"ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "colls")}
    head = {"PATH": str(Path(sys.executable).parent), "ANSIBLE_CONFIG": "/etc/onprem-ray/a.cfg"}
    assert ansible_environment(installed, head) == {}  # the head's ansible.cfg decides
    assert ansible_environment(checkout, {"ANSIBLE_CONFIG": "/etc/a.cfg", "PATH": ""}).get(
        "ANSIBLE_CONFIG") is None


def test_the_collections_playbook_runs_by_name_against_the_cluster_file(tmp_path):
    from onprem_ray_agent.adapters.runner import ADD_WORKERS
    from onprem_ray_agent.config import collection_dir

    root = collection_dir()
    if not (root / ".cache" / "collections" / "ansible_collections" / "onprem" / "ray").exists():
        pytest.skip("the collection is not linked into .cache/collections (make setup)")
    cluster = tmp_path / "cluster.yml"
    cluster.write_text(textwrap.dedent("""
        plugin: onprem.ray.cluster
        provider: {type: local, head_ip: 127.0.0.8, worker_ips: [127.0.0.9]}
        auth: {ssh_user: nobody}
    """))
    runner = AnsibleRunner(tmp_path / "runner", cluster, {"127.0.0.9"},
                           envvars=ansible_environment(root, os.environ))
    runner.start("fqcn", ADD_WORKERS, ["127.0.0.9"])
    (result,) = wait_for(runner)
    # the pool's own checks passed; the machine itself cannot be reached over SSH
    assert dict(result.hosts) == {"127.0.0.9": UNREACHABLE}
    assert "Limit | every host of --limit is a worker of the pool" in result.output_tail
    assert result.failed_tasks["127.0.0.9"].startswith("Preflight")
    assert "\x1b[" not in result.output_tail
