"""The command `onprem-ray` on the local test pool, for real: up with its progress and table,
every command over verified SSH, the interactive ones under a pty, bad input, down.

One cluster is made by the first test (`onprem-ray up`) and the tests run in file order on
it; `down` comes last, so the module leaves the pool as `down` does. The command runs as a
user runs it, a separate process: from this checkout, and from the wheel installed in a
fresh venv (test_the_wheel_in_a_fresh_venv_...).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pexpect
import pytest
import yaml

from tests.cluster import Cluster
from tests.pool import pool as pools
from tests.pool.wheelhouse import REPO_ROOT, ensure_wheelhouse

pytestmark = pytest.mark.pool

ENV = {**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'cli'}:{REPO_ROOT / '.cache/collections'}",
       "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg")}
COMMAND = [sys.executable, "-m", "onprem_ray_cli"]
TABLE_ROW = re.compile(r"^(\S+)\s+(head|worker)\s+(ok|changed|failed|unreachable)\s+"
                       r"(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", re.MULTILINE)


def cli(*args: str, timeout: float = 900, env: dict | None = None,
        cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=timeout,
                          env=env or ENV, cwd=cwd, check=False, stdin=subprocess.DEVNULL)


def table(stdout: str) -> dict[str, dict]:
    rows = {m[0]: {"role": m[1], "outcome": m[2], "ok": int(m[3]), "changed": int(m[4]),
                   "failed": int(m[5]), "unreachable": int(m[6])}
            for m in TABLE_ROW.findall(stdout)}
    assert rows, f"no table of hosts x outcome in:\n{stdout[-3000:]}"
    return rows


def log_path(stdout: str) -> Path:
    match = re.search(r"^Ansible's full log: (\S+)$", stdout, re.MULTILINE)
    assert match, stdout[-2000:]
    return Path(match[1])


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    return ensure_wheelhouse()


@pytest.fixture(scope="module")
def cluster(pool: pools.Pool, wheelhouse: Path) -> Cluster:
    return Cluster(pool=pool, wheelhouse=wheelhouse)


@pytest.fixture(scope="module")
def cfile(pool: pools.Pool) -> str:
    return str(pool.inventory)


def variant(pool: pools.Pool, tmp_path: Path, **changes) -> str:
    """A copy of the pool's cluster file with some keys changed (a Ray YAML, no plugin key)."""
    data = yaml.safe_load(pool.inventory.read_text())
    data.pop("plugin")
    for key, value in changes.items():
        if isinstance(value, dict):
            data[key] = {**data.get(key, {}), **value}
        else:
            data[key] = value
    path = tmp_path / "ray-cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


# ---------------------------------------------------------------- up


def test_up_shows_each_hosts_step_then_the_table_and_keeps_the_log(cluster, cfile, wheelhouse):
    done = cli("up", cfile, "-e", f"ray_wheelhouse_dir={wheelhouse}")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    hosts = {m.ip for m in cluster.pool.machines}
    # Live progress: lines "<host>  ..  <step>" for every host while it ran.
    stepping = {line.split()[0] for line in done.stdout.splitlines()
                if re.match(r"^\S+\s+\.\.\s+\S", line)}
    assert stepping == hosts
    rows = table(done.stdout)
    assert set(rows) == hosts
    assert rows[cluster.pool.head.ip]["role"] == "head"
    # ok where an earlier module of the session already set the machine up.
    assert all(r["outcome"] in ("changed", "ok") and r["failed"] == 0
               for r in rows.values()), rows
    log = log_path(done.stdout).read_text()
    assert "PLAY RECAP" in log and "TASK [" in log
    cluster.wait_alive(hosts)


def test_a_second_up_changes_nothing_and_says_so(cluster, cfile, wheelhouse):
    pid = cluster.unit(cluster.pool.head)["MainPID"]
    done = cli("up", cfile, "-e", f"ray_wheelhouse_dir={wheelhouse}")
    assert done.returncode == 0, done.stdout[-4000:]
    rows = table(done.stdout)
    assert len(rows) == len(cluster.pool.machines)
    assert all(r["outcome"] == "ok" and r["changed"] == 0 for r in rows.values()), rows
    assert cluster.unit(cluster.pool.head)["MainPID"] == pid  # Ray not restarted


def test_a_failing_up_names_the_host_the_step_and_the_cause(cluster, cfile, wheelhouse):
    done = cli("up", cfile, "-e", f"ray_wheelhouse_dir={wheelhouse}",
               "-e", "ray_up_workers=bogus")
    assert done.returncode == 1
    failed = {h for h, r in table(done.stdout).items() if r["outcome"] == "failed"}
    assert failed and failed <= {m.ip for m in cluster.pool.workers}
    assert re.search(r'^\S+ failed at step "Check the worker selection" \(play "Ray workers"\):'
                     r"\n    ray_up_workers=bogus: use min, all or none$", done.stderr,
                     re.MULTILINE), done.stderr
    assert log_path(done.stdout).is_file()


# ---------------------------------------------------------------- what the cluster is


def test_get_head_ip_and_worker_ips_with_their_lifecycle_states(cluster, cfile):
    done = cli("get-head-ip", cfile)
    assert (done.returncode, done.stdout) == (0, f"{cluster.pool.head.ip}\n")
    deadline = time.monotonic() + 60
    while True:  # the agent records the workers in its first iterations
        done = cli("get-worker-ips", "--json", cfile)
        assert done.returncode == 0, done.stderr
        rows = json.loads(done.stdout)
        if all(r["state"] == "active" for r in rows) or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert [r["ip"] for r in rows] == [m.ip for m in cluster.pool.workers]
    assert {r["state"] for r in rows} == {"active"}, rows
    plain = cli("get-worker-ips", "--no-state", cfile)
    assert plain.stdout.split() == [m.ip for m in cluster.pool.workers]


def test_status_human_and_json(cluster, cfile):
    human = cli("status", cfile)
    assert human.returncode == 0, human.stderr
    assert f"Machines ({len(cluster.pool.workers)}):" in human.stdout
    assert "Last iteration:" in human.stdout
    as_json = json.loads(cli("status", "--json", cfile).stdout)
    assert {m["ip"] for m in as_json["machines"]} == {m.ip for m in cluster.pool.workers}


def test_monitor_shows_the_agents_journal(cfile):
    done = cli("monitor", "--no-follow", "--lines", "200", cfile)
    assert done.returncode == 0, done.stderr
    assert "onprem-ray-agent" in done.stdout and "INFO" in done.stdout


def test_monitor_follows_until_interrupted(cfile):
    process = subprocess.Popen([*COMMAND, "monitor", "--lines", "1", cfile], env=ENV,
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    time.sleep(8)
    assert process.poll() is None  # still following
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert "onprem-ray-agent" in out
    assert process.returncode == 130 and "interrupted" in err


# ---------------------------------------------------------------- exec, attach


def test_exec_runs_on_the_head_with_ray_at_hand_and_passes_the_exit_code(cluster, cfile):
    done = cli("exec", cfile, "echo $RAY_ADDRESS; ray status >/dev/null && echo ray-ok; exit 7")
    assert done.returncode == 7, done.stderr
    assert done.stdout.split() == [f"{cluster.pool.head.ip}:6379", "ray-ok"]


def test_exec_on_one_node_and_on_all_nodes(cluster, cfile):
    worker = cluster.pool.workers[-1]
    done = cli("exec", "--node", worker.ip, cfile, "--", "hostname")
    assert (done.returncode, done.stdout.strip()) == (0, worker.name)
    done = cli("exec", "--all-nodes", cfile, "--", "hostname")
    assert done.returncode == 0
    assert [line for line in done.stdout.splitlines() if not line.startswith("==")] == [
        m.name for m in cluster.pool.machines]
    failing = cli("exec", "--all-nodes", cfile, f"test $(hostname) != {worker.name}")
    assert failing.returncode == 1
    assert f"== {worker.ip}: exit code 1" in failing.stderr


def test_exec_port_forward_reaches_the_heads_dashboard(cluster, cfile):
    dashboard_serving(cluster)
    port = free_port()
    process = subprocess.Popen([*COMMAND, "exec", "--port-forward", f"{port}:8265", cfile,
                                "sleep 20"], env=ENV, cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert http_status(f"http://127.0.0.1:{port}/", within_s=15) == 200
    finally:
        _out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err


def test_attach_is_an_interactive_shell_whose_exit_code_passes_through(cluster, cfile):
    child = pexpect.spawn(COMMAND[0], [*COMMAND[1:], "attach", cfile], env=ENV,
                          cwd=str(REPO_ROOT), encoding="utf-8", timeout=60)
    child.expect(r"\$ ")
    child.sendline("echo answer-$((6*7)) on $(hostname)")
    child.expect(f"answer-42 on {cluster.pool.head.name}")
    child.sendline("exit 5")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 5


def test_exec_tmux_without_tmux_says_so_naming_the_host(cluster, cfile):
    worker = cluster.pool.workers[0]
    child = pexpect.spawn(COMMAND[0], [*COMMAND[1:], "exec", "--tmux", "--node", worker.ip,
                                       cfile, "sleep 1"], env=ENV, cwd=str(REPO_ROOT),
                          encoding="utf-8", timeout=60)
    child.expect(f"tmux is not installed on {worker.ip}")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 127


@pytest.fixture
def tmux_on_head(cluster) -> None:
    """tmux on the head: the pool's image has none and its machines reach no package index,
    so this host's binary (the same Debian release) and its two libraries are copied in."""
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("tmux is not installed on this host to copy onto the pool's head")
    container = cluster.pool.head.container
    libs = subprocess.run(["ldd", tmux], capture_output=True, text=True, check=True).stdout
    for lib in re.findall(r"=> (\S*(?:libutempter|libevent_core)\S*)", libs):
        subprocess.run(["docker", "cp", "-L", lib, f"{container}:/usr/local/lib/"], check=True)
    subprocess.run(["docker", "cp", "-L", tmux, f"{container}:/usr/local/bin/tmux"],
                   check=True)
    subprocess.run(["docker", "exec", container, "ldconfig"], check=True)


def test_exec_tmux_keeps_the_command_running_and_attach_tmux_shows_it(cluster, cfile,
                                                                      tmux_on_head):
    child = pexpect.spawn(COMMAND[0], [*COMMAND[1:], "exec", "--tmux", cfile,
                                       "echo from-tmux-$((6*7)); sleep 600"], env=ENV,
                          cwd=str(REPO_ROOT), encoding="utf-8", timeout=60)
    child.expect(r"started in tmux session onprem-ray-\d+")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    sessions = cluster.pool.ssh(cluster.pool.head, "tmux", "list-sessions").stdout
    assert "onprem-ray-" in sessions
    attach = pexpect.spawn(COMMAND[0], [*COMMAND[1:], "attach", "--tmux", cfile], env=ENV,
                           cwd=str(REPO_ROOT), encoding="utf-8", timeout=60,
                           dimensions=(40, 120))
    attach.expect("from-tmux-42")  # the command's output, in the session it still runs in
    attach.sendcontrol("b")
    attach.send("d")  # detach: the session and its command stay
    attach.expect(pexpect.EOF)
    attach.close()
    assert attach.exitstatus == 0
    cluster.pool.ssh(cluster.pool.head, "tmux", "kill-server", check=False)


# ---------------------------------------------------------------- submit, jobs


def test_submit_runs_the_script_with_rays_address_and_token(cluster, cfile, tmp_path):
    script = tmp_path / "count.py"
    script.write_text(
        "import sys, ray\nray.init()\n"
        "@ray.remote\ndef double(x):\n    return 2 * x\n"
        "print('total', sum(ray.get([double.remote(i) for i in range(10)])), sys.argv[1:])\n"
        "print('nodes', len([n for n in ray.nodes() if n['Alive']]))\n")
    done = cli("submit", cfile, str(script), "--flag", "a b")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "total 90 ['--flag', 'a b']" in done.stdout
    assert f"nodes {len(cluster.pool.machines)}" in done.stdout
    left = cluster.pool.ssh(cluster.pool.head, "ls", "/tmp").stdout
    assert "onprem-ray-submit" not in left  # its directory is removed


def test_submit_passes_a_failing_scripts_exit_code(cfile, tmp_path):
    raising = tmp_path / "raising.py"
    raising.write_text("raise RuntimeError('the job broke')\n")
    done = cli("submit", cfile, str(raising))
    assert done.returncode == 1
    assert "RuntimeError: the job broke" in done.stderr
    exiting = tmp_path / "exiting.py"
    exiting.write_text("import sys\nsys.exit(9)\n")
    assert cli("submit", cfile, str(exiting)).returncode == 9


def test_job_submit_through_the_jobs_api(cfile):
    done = cli("job", "submit", cfile, "--", "python", "-c",
               "import ray; ray.init(); print('job nodes', len(ray.nodes()))")
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^job nodes \d+$", done.stdout, re.MULTILINE), done.stdout
    assert re.search(r"job raysubmit_\w+: SUCCEEDED", done.stderr)
    failed = cli("job", "submit", cfile, "--", "python", "-c", "import sys; sys.exit(3)")
    assert failed.returncode == 1
    assert re.search(r"job raysubmit_\w+: FAILED", failed.stderr)


# ---------------------------------------------------------------- files, dashboard


def test_rsync_up_to_every_node_and_down_from_each(cluster, cfile, tmp_path):
    source = tmp_path / "up"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "data.txt").write_text("payload\n")
    done = cli("rsync-up", "--all-nodes", cfile, f"{source}/", "cli-synced/")
    assert done.returncode == 0, done.stderr
    for machine in cluster.pool.machines:
        assert cluster.pool.ssh(machine, "cat", "cli-synced/sub/data.txt").stdout == "payload\n"
    down = tmp_path / "down"
    done = cli("rsync-down", "--all-nodes", cfile, "cli-synced/sub/data.txt", str(down))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in down.iterdir()) == sorted(m.ip for m in cluster.pool.machines)
    assert all((down / m.ip / "data.txt").read_text() == "payload\n"
               for m in cluster.pool.machines)
    one = tmp_path / "one.txt"
    assert cli("rsync-down", "--node", cluster.pool.workers[0].ip, cfile,
               "cli-synced/sub/data.txt", str(one)).returncode == 0
    assert one.read_text() == "payload\n"
    missing = cli("rsync-down", cfile, "no/such/file", str(tmp_path / "x"))
    assert missing.returncode == 70 and "rsync exited" in missing.stderr


def test_dashboard_forwards_the_heads_dashboard_until_interrupted(cluster, cfile):
    dashboard_serving(cluster)
    port = free_port()
    process = subprocess.Popen([*COMMAND, "dashboard", "--port", str(port), cfile], env=ENV,
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line
        assert http_status(f"http://127.0.0.1:{port}/", within_s=15) == 200
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert process.returncode == 0


# ---------------------------------------------------------------- bad input


def test_a_missing_cluster_file_exits_66_naming_it(tmp_path):
    done = cli("exec", str(tmp_path / "nowhere.yaml"), "true")
    assert done.returncode == 66
    assert f"{tmp_path / 'nowhere.yaml'}: no such cluster file" in done.stderr


def test_a_refused_cluster_file_exits_65_with_the_key_and_runs_nothing(cluster, tmp_path):
    path = variant(cluster.pool, tmp_path, max_worker=1)
    for args in (["up", path], ["exec", path, "true"], ["get-head-ip", path]):
        done = cli(*args)
        assert done.returncode == 65, args
        assert path in done.stderr and "max_worker" in done.stderr
        assert "Ansible's full log" not in done.stdout


def test_an_unknown_host_key_is_refused_with_77(cluster, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    path = variant(cluster.pool, tmp_path, auth={"ssh_known_hosts_file": str(empty)})
    done = cli("exec", path, "true")
    assert done.returncode == 77
    assert f"head {cluster.pool.head.ip}: its SSH host key is not in {empty}" in done.stderr
    assert empty.read_text() == ""  # nothing recorded


def test_a_changed_host_key_is_refused_with_77(cluster, tmp_path):
    lines = cluster.pool.known_hosts.read_text().splitlines()
    head = [line for line in lines if line.split()[0] == cluster.pool.head.ip]
    other = [line for line in lines if line.split()[0] == cluster.pool.workers[0].ip]
    assert head and other
    forged = tmp_path / "known_hosts"
    forged.write_text(f"{cluster.pool.head.ip} {' '.join(other[0].split()[1:])}\n")
    path = variant(cluster.pool, tmp_path, auth={"ssh_known_hosts_file": str(forged)})
    done = cli("status", path)
    assert done.returncode == 77
    assert "does NOT match" in done.stderr


def test_a_head_that_is_down_exits_69_and_up_reports_it_unreachable(cluster, tmp_path,
                                                                    wheelhouse):
    """A head address where no machine answers: every SSH command says so with 69, and up
    ends with the head unreachable in its table (exit 1), the cause beside it."""
    subnet = cluster.pool.head.ip.rsplit(".", 1)[0]
    # No machine of the pool in it: up must not touch the real workers with another head.
    path = variant(cluster.pool, tmp_path, provider={
        "type": "local", "head_ip": f"{subnet}.250", "worker_ips": [f"{subnet}.251"]})
    started = time.monotonic()
    done = cli("exec", path, "true")
    assert done.returncode == 69
    assert f"head {subnet}.250: cannot be reached over SSH as ops" in done.stderr
    assert time.monotonic() - started < 60
    assert cli("status", path).returncode == 69
    workers = cli("get-worker-ips", path)  # the list still comes, the states unknown
    assert workers.returncode == 0 and "unknown" in workers.stdout
    assert "lifecycle states unknown" in workers.stderr
    up = cli("up", path, "-e", f"ray_wheelhouse_dir={wheelhouse}", timeout=600)
    assert up.returncode == 1
    rows = table(up.stdout)
    assert rows[f"{subnet}.250"]["outcome"] == "unreachable"
    assert f'{subnet}.250 unreachable at step "' in up.stderr


def test_down_needs_yes_without_a_terminal(cluster, cfile):
    done = cli("down", cfile)
    assert done.returncode == 2 and "Pass --yes" in done.stderr
    assert cluster.unit(cluster.pool.head)["ActiveState"] == "active"


# ---------------------------------------------------------------- restart, down


def test_up_restart_only_restarts_ray_where_it_runs(cluster, cfile, wheelhouse):
    before = {m.ip: cluster.unit(m)["MainPID"] for m in cluster.pool.machines}
    done = cli("up", "--restart-only", "--yes", cfile, "-e", f"ray_wheelhouse_dir={wheelhouse}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert all(r["failed"] == 0 for r in table(done.stdout).values())
    assert done.stdout.count("Ray restarted") == len(cluster.pool.machines)
    after = {m.ip: cluster.unit(m)["MainPID"] for m in cluster.pool.machines}
    assert all(after[ip] != before[ip] for ip in before), (before, after)
    cluster.wait_alive(cluster.all_ips, timeout=300)


def test_up_with_limits_starts_only_min_workers_and_the_head_follows(cluster, cfile,
                                                                     wheelhouse):
    """--min-workers 1 on a cluster whose workers all run: up starts no more and stops none
    (up never stops Ray); the head's copy of the cluster file carries the new limits."""
    done = cli("up", "--min-workers", "1", "--max-workers", "1", cfile,
               "-e", f"ray_wheelhouse_dir={wheelhouse}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    copy = cluster.pool.ssh(cluster.pool.head, "sudo", "cat",
                            "/etc/onprem-ray/cluster.yml").stdout
    data = yaml.safe_load(copy)
    assert (data["min_workers"], data["max_workers"]) == (1, 1)
    restored = cli("up", cfile, "-e", f"ray_wheelhouse_dir={wheelhouse}")
    assert restored.returncode == 0
    data = yaml.safe_load(cluster.pool.ssh(cluster.pool.head, "sudo", "cat",
                                           "/etc/onprem-ray/cluster.yml").stdout)
    assert data["max_workers"] == len(cluster.pool.workers)


# ---------------------------------------------------------------- the installed command


def test_the_wheel_in_a_fresh_venv_runs_up_and_submit_from_a_bare_directory(
        cluster, cfile, wheelhouse, tmp_path):
    """The distribution as a user installs it: the wheel alone into a new venv (its
    dependencies from the index, at the versions the project pins); run from a directory
    with no ansible.cfg, with no setting of this checkout's in the environment. The head's
    agent comes from the installed distribution itself."""
    from tests.unit.test_distribution import build

    wheel = build(tmp_path / "cache")["wheel"]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    installed = subprocess.run(
        [venv / "bin/pip", "install", "--quiet", "--disable-pip-version-check",
         "-c", REPO_ROOT / "requirements/dev.txt", wheel],
        capture_output=True, text=True, timeout=900, check=False)
    assert installed.returncode == 0, installed.stderr[-3000:]
    user = tmp_path / "user"
    user.mkdir()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("ANSIBLE_", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(REPO_ROOT)))
    env["HOME"] = str(user)  # no wheel cached from another run
    command = str(venv / "bin/onprem-ray")
    up = subprocess.run([command, "up", cfile, "-e", f"ray_wheelhouse_dir={wheelhouse}"],
                        cwd=user, env=env, capture_output=True, text=True, timeout=900,
                        check=False)
    assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-3000:]
    assert {r["failed"] for r in table(up.stdout).values()} == {0}
    script = user / "hello.py"
    script.write_text("import ray\nray.init()\nprint('cpus', ray.cluster_resources()['CPU'])\n")
    submitted = subprocess.run([command, "submit", cfile, str(script)], cwd=user, env=env,
                               capture_output=True, text=True, timeout=300, check=False)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    assert re.search(r"^cpus \d+", submitted.stdout, re.MULTILINE), submitted.stdout


def test_down_workers_only_then_down(cluster, cfile):
    done = cli("down", "--workers-only", "--yes", cfile)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    # The head is in the run too: its agent is stopped first (it would start the workers
    # again), while Ray keeps running there.
    assert set(table(done.stdout)) == {m.ip for m in cluster.pool.machines}
    assert all(cluster.unit(m)["ActiveState"] == "inactive" for m in cluster.pool.workers)
    assert cluster.unit(cluster.pool.head)["ActiveState"] == "active"
    agent = cluster.pool.ssh(cluster.pool.head, "systemctl", "is-active",
                             "onprem-ray-agent.service", check=False).stdout.strip()
    assert agent == "inactive", agent
    done = cli("down", "--yes", cfile)
    assert done.returncode == 0, done.stdout[-3000:]
    assert cluster.unit(cluster.pool.head)["ActiveState"] == "inactive"
    # No agent on the head any more: status says so, with what to do.
    status = cli("status", cfile)
    assert status.returncode == 75
    assert "no agent status" in status.stderr and "onprem-ray up" in status.stderr


# ---------------------------------------------------------------- helpers


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def dashboard_serving(cluster) -> None:
    """Ray's dashboard answers on the head's own address (reached from this host): after a
    restart of Ray it takes a while on a busy machine, which is not what the tunnel tests test."""
    assert http_status(f"http://{cluster.pool.head.ip}:8265/", within_s=180) == 200


def http_status(url: str, within_s: float) -> int:
    deadline = time.monotonic() + within_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
                return response.status
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
