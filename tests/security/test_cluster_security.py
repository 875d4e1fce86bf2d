"""Security of a cluster that `up` made on the local test pool, checked from outside:

- a client without the cluster's token (or with a wrong one) is refused by the GCS, the
  dashboard and the client port, while the same request with the token is served;
- every listening socket of the head and of a worker is on the node's private address or on
  loopback, except sshd and Ray's gRPC servers on their fixed ports (all interfaces in Ray
  2.60), each of which refuses a client without the token: the dashboard, the client server
  and the agent's metrics answer only on the configured private address;
- every file that holds the token or a private key is 0600 (or stricter) and owned by the user
  that needs it, on every node;
- the token appears in no encoding (raw, base64, JSON-escaped) in the agent's status, its
  metrics or its playbook runs' artifacts on disk;
- the agent runs with least privilege: its unit's `systemd-analyze security` exposure at or
  below a threshold, its process the login user's with no new privileges, no capabilities
  and a system call filter.

The head and 3 workers; min_workers 1 with an idle timeout of 15 s, so that the agent (under
systemd on the head) retires the 2 idle workers it does not need: its retire runs leave the
artifacts checked here, and one worker keeps running for the socket listing.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml

from tests.cluster import AUTH_FILE, GCS_PORT, RAY_ENV, Cluster, recap
from tests.leaks import find_leaks
from tests.pool import pool as pools
from tests.pool.wheelhouse import ensure_wheelhouse

pytestmark = pytest.mark.pool

PYTHON = "/opt/ray/venv/bin/python"
DASHBOARD_PORT, CLIENT_PORT, AGENT_METRICS_PORT = 8265, 10001, 9480
STATE_DIR = "/var/lib/onprem-ray/agent"
AGENT_UNIT = "onprem-ray-agent.service"
# `systemd-analyze security` of the agent's running unit: 1.8 measured on the pool's Debian 12
# (systemd 252; 9.2 without the unit's sandboxing): a sandboxing line lost shows here.
AGENT_EXPOSURE_MAX = 1.8
# Where the roles and the agent write files on a node: searched for the token and private
# keys (not Ray's virtual environment, whose packages carry example keys of their own).
SECRET_DIRS = ["/etc", "/home", "/root", "/var/lib/onprem-ray", "/tmp"]
# A GCS call, with the token settings the environment gives (or none).
GCS_CALL = """
import sys
from ray._raylet import GcsClient
nodes = GcsClient(address=sys.argv[1]).get_all_node_info(timeout=10)
print("served", len(nodes))
"""
# A Ray client session through the client server's port.
CLIENT_CALL = """
import sys, ray
ray.init(f"ray://{sys.argv[1]}", logging_level="ERROR")
print("served", ray.get(ray.put(41)) + 1)
"""
# An HTTP GET, with an optional bearer token: prints the status code.
HTTP_GET = """
import sys, urllib.error, urllib.request
request = urllib.request.Request(sys.argv[1])
if len(sys.argv) > 2:
    request.add_header("Authorization", "Bearer " + open(sys.argv[2]).read().strip())
try:
    print(urllib.request.urlopen(request, timeout=10).status)
except urllib.error.HTTPError as err:
    print(err.code)
"""


@dataclass
class Secured:
    cluster: Cluster
    token: str

    @property
    def pool(self) -> pools.Pool:
        return self.cluster.pool

    @property
    def head(self) -> pools.Machine:
        return self.pool.head

    def run(self, machine: pools.Machine, *remote: str, timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
        return self.pool.ssh(machine, *remote, check=False, timeout=timeout)

    def leaks(self, text: str) -> list[str]:
        """The token's forms (raw, JSON-escaped, base64 at every alignment) found in `text`."""
        return find_leaks(text, {"token": self.token})


@pytest.fixture(scope="module")
def secured(pool: pools.Pool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    assert len(pool.workers) >= 3, "these tests need a head and 3 workers (POOL_MACHINES=4)"
    source = yaml.safe_load(pool.inventory.read_text())
    source.update(min_workers=1, max_workers=len(pool.workers), idle_timeout_minutes=0.25)
    inventory = tmp_path_factory.mktemp("secured") / "cluster.yml"
    inventory.write_text(yaml.safe_dump(source, sort_keys=False))
    cluster = Cluster(pool=pool, wheelhouse=ensure_wheelhouse(), inventory=inventory)
    # From an agent that remembers nothing: an earlier test's records on this pool (a retire
    # under way) would be resumed while `up` starts the workers (up and the agent at the same
    # time is a fault case of its own).
    pool.ssh(pool.head, "sudo", "systemctl", "stop", "onprem-ray-agent.service", check=False)
    pool.ssh(pool.head, "sudo", "rm", "-f", f"{STATE_DIR}/state.db", f"{STATE_DIR}/state.db-wal",
             f"{STATE_DIR}/state.db-shm", check=False)
    # Every worker started, the agent on (`up` starts it): it retires none of the workers `up`
    # started as idle before `up` ends its claim, idle timeout of 15 s or not.
    result = cluster.playbook("up", "-e", "ray_up_workers=all", "-e", "head_agent_interval=1",
                              timeout=1800)
    counts = recap(result.stdout)
    assert set(counts) == {m.ip for m in pool.machines}, counts
    assert all(c["failed"] == 0 and c["unreachable"] == 0 for c in counts.values()), counts
    token = pool.ssh(pool.head, "sudo", "cat", AUTH_FILE).stdout.strip()
    assert len(token) >= 32
    # The agent retires the idle workers beyond min_workers 1: its runs leave artifacts.
    deadline = time.monotonic() + 240
    while len(cluster.alive_ips() - {pool.head.ip}) != 1:
        assert time.monotonic() < deadline, f"ALIVE: {cluster.alive_ips()}"
        time.sleep(3)
    yield Secured(cluster=cluster, token=token)
    pool.ssh(pool.head, "sudo", "systemctl", "disable", "--now", "onprem-ray-agent.service",
             check=False)


def running_worker(secured: Secured) -> pools.Machine:
    """The worker that still runs Ray; it also gets a wrong token in /tmp/wrong-token."""
    alive = secured.cluster.alive_ips()
    worker = next(m for m in secured.pool.workers if m.ip in alive)
    secured.run(worker, "sh", "-c", "umask 077; echo 0123456789abcdef0123456789abcdef "
                                    "> /tmp/wrong-token")
    return worker


# ---------------------------------------------------------------- the token is required


WRONG_TOKEN = ["env", "RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN_PATH=/tmp/wrong-token"]


@pytest.mark.parametrize("client", ["no token", "a wrong token"])
def test_the_gcs_refuses_a_client_without_the_token(secured: Secured, client: str) -> None:
    worker = running_worker(secured)
    env = ["env", "-u", "RAY_AUTH_MODE", "-u", "RAY_AUTH_TOKEN_PATH"] if client == "no token" \
        else WRONG_TOKEN
    refused = secured.run(worker, *env, PYTHON, "-c", GCS_CALL, secured.cluster.gcs)
    assert refused.returncode != 0 and "served" not in refused.stdout, refused.stdout
    assert re.search(r"auth|token|unauthenticated", refused.stderr, re.IGNORECASE), \
        refused.stderr[-2000:]
    served = secured.run(worker, *RAY_ENV, PYTHON, "-c", GCS_CALL, secured.cluster.gcs)
    assert served.returncode == 0 and served.stdout.startswith("served"), served.stderr[-2000:]


def test_the_client_port_refuses_a_client_without_the_token(secured: Secured) -> None:
    worker = running_worker(secured)
    address = f"{secured.head.ip}:{CLIENT_PORT}"
    refused = secured.run(worker, "timeout", "90", *WRONG_TOKEN, PYTHON, "-c", CLIENT_CALL,
                          address)
    assert refused.returncode != 0 and "served" not in refused.stdout, refused.stdout


# The control of the test above. Known open problem: after the end-to-end tests ran on the
# same pool (as in CI) it can fail, once seen with "Starting Ray client server failed" (Ray's
# per-client server did not start); it passed on fresh pools. Not strict until the cause is
# known; docs/reliability.md says so.
@pytest.mark.xfail(strict=False, reason=(
    "the token-bearing client was once refused too: Ray's per-client server failed to start "
    "after the e2e tests on the same pool; cause not yet known"))
def test_the_client_port_serves_a_client_with_the_token(secured: Secured) -> None:
    worker = running_worker(secured)
    address = f"{secured.head.ip}:{CLIENT_PORT}"
    served = secured.run(worker, "timeout", "90", *RAY_ENV, PYTHON, "-c", CLIENT_CALL, address)
    assert served.stdout.strip().endswith("served 42"), served.stderr[-2000:]


def test_the_dashboard_refuses_a_client_without_the_token(secured: Secured) -> None:
    worker = running_worker(secured)
    url = f"http://{secured.head.ip}:{DASHBOARD_PORT}/api/version"
    without = secured.run(worker, PYTHON, "-c", HTTP_GET, url).stdout.strip()
    wrong = secured.run(worker, PYTHON, "-c", HTTP_GET, url, "/tmp/wrong-token").stdout.strip()
    secured.run(secured.head, "sudo", "install", "-m", "0600", "-o", "ops", AUTH_FILE,
                "/tmp/right-token")
    right = secured.run(secured.head, PYTHON, "-c", HTTP_GET, url, "/tmp/right-token")
    secured.run(secured.head, "rm", "-f", "/tmp/right-token")
    # Ray answers 401 without a token, 403 with a wrong one.
    assert (without, wrong, right.stdout.strip()) == ("401", "403", "200"), right.stderr


# ---------------------------------------------------------------- listening sockets


def listening(secured: Secured, machine: pools.Machine) -> list[tuple[str, int, str]]:
    """(address, port, process) of every listening TCP socket on `machine`. Root in an
    unprivileged container cannot see the processes of other users, so `ss` runs as root and
    as the ray user, and the names seen are merged."""
    names: dict[tuple[str, int], str] = {}
    for user in (["sudo"], ["sudo", "-u", "ray"]):
        for line in secured.run(machine, *user, "ss", "-Hltnp").stdout.splitlines():
            address, _, port = line.split()[3].rpartition(":")
            key = (address.strip("[]").split("%")[0], int(port))
            process = re.search(r'users:\(\("([^"]+)"', line)
            if process or key not in names:
                names[key] = process.group(1) if process else "?"
    return [(address, port, process) for (address, port), process in names.items()]


# What may listen on all interfaces, by port, and why. Ray 2.60 binds its gRPC servers to all
# interfaces whatever --node-ip-address says (no setting binds them to one address); every call
# to them needs the cluster's token, and the role fixes their ports (its defaults) so that a
# firewall can keep them to the cluster network. Ray's unauthenticated metrics servers, which
# it also binds to all interfaces, are off by default (ray_metrics_export).
SSH_PORT = 22
NODE_MANAGER_PORT, OBJECT_MANAGER_PORT, AGENT_GRPC_PORT = 6380, 6381, 6382
WORKER_PORTS = range(10002, 20000)  # ray_min_worker_port..ray_max_worker_port
# port -> (its process as ss names it, a gRPC method called with an empty request)
ANY_ADDRESS = {
    GCS_PORT: ("gcs_server", "/ray.rpc.NodeInfoGcsService/CheckAlive"),
    NODE_MANAGER_PORT: ("raylet", "/ray.rpc.NodeManagerService/GetSystemConfig"),
    # An empty pull: an object that cannot be local, so nothing is pushed.
    OBJECT_MANAGER_PORT: ("raylet", "/ray.rpc.ObjectManagerService/Pull"),
    AGENT_GRPC_PORT: ("ray::DashboardA", "/ray.rpc.ReporterService/HealthCheck"),
}
# Ray's workers and drivers, whatever their process names (python, ray::IDLE, ray::<Actor>).
WORKER_METHOD = "/ray.rpc.CoreWorkerService/NumPendingTasks"
ALL_INTERFACES = ("0.0.0.0", "::", "*")  # noqa: S104 (addresses read, not bound)
WILDCARD = ALL_INTERFACES[0]


def unmapped(address: str) -> str:
    """An IPv4 address as a dual-stack socket shows it (::ffff:10.0.0.1), plain."""
    return address.removeprefix("::ffff:")


def on_all_interfaces(socket: tuple[str, int, str]) -> bool:
    return unmapped(socket[0]) in ALL_INTERFACES


def allowed(socket: tuple[str, int, str], private_ip: str) -> bool:
    """The allow-list: the node's private address, loopback; on all interfaces, sshd on port 22
    and Ray's gRPC servers on their ports."""
    address, port, process = socket
    address = unmapped(address)
    if address in (private_ip, "::1") or address.startswith("127."):
        return True
    if address not in ALL_INTERFACES:
        return False
    if port == SSH_PORT:
        return process == "sshd"
    if port in ANY_ADDRESS:
        return process == ANY_ADDRESS[port][0]
    return port in WORKER_PORTS


def test_the_allow_list_reads_dual_stack_addresses() -> None:
    ip = "10.0.0.5"
    assert allowed(("::ffff:10.0.0.5", 8265, "python"), ip)
    assert allowed(("::ffff:127.0.0.1", 10001, "python"), ip)
    assert allowed(("*", GCS_PORT, "gcs_server"), ip)
    assert allowed((WILDCARD, 10123, "ray::IDLE"), ip)
    assert not allowed(("*", 44217, "python"), ip)
    assert not allowed(("::ffff:10.0.0.6", 8265, "python"), ip)
    assert not allowed((WILDCARD, SSH_PORT, "python"), ip)
    assert not allowed((WILDCARD, NODE_MANAGER_PORT, "python"), ip)


def test_the_dashboard_client_and_metrics_answer_only_on_the_private_address(
        secured: Secured) -> None:
    head = secured.head
    sockets = listening(secured, head)
    for port in (DASHBOARD_PORT, CLIENT_PORT, AGENT_METRICS_PORT):
        addresses = {unmapped(address) for address, p, _ in sockets if p == port}
        # The private address, and loopback at most (the client server also listens there).
        assert head.ip in addresses and addresses <= {head.ip, "127.0.0.1", "::1"}, \
            (port, sorted(sockets))


# A driver on the head holding an actor on the worker: a Ray worker process listens on each
# node (in the worker port range) while the sockets are listed.
HOLDER = """
import sys, time, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init(address=sys.argv[1], logging_level="ERROR")
node = next(n["NodeID"] for n in ray.nodes()
            if n["Alive"] and n["NodeManagerAddress"] == sys.argv[2])
@ray.remote(num_cpus=0)
class Holder:
    def ping(self):
        return "pong"
on_worker = NodeAffinitySchedulingStrategy(node, soft=False)
holder = Holder.options(scheduling_strategy=on_worker).remote()
print(ray.get(holder.ping.remote()), flush=True)
time.sleep(600)
"""
# Calls each (address, gRPC method) without and then with the token: prints the status codes.
GRPC_CALLS = """
import json, sys, grpc
token = open(sys.argv[1]).read().strip()
codes = {}
for address, method in json.loads(sys.argv[2]):
    codes[address] = []
    for metadata in (None, [("authorization", "Bearer " + token)]):
        with grpc.insecure_channel(address) as channel:
            try:
                channel.unary_unary(method)(b"", timeout=10, metadata=metadata)
                codes[address].append("OK")
            except grpc.RpcError as err:
                codes[address].append(err.code().name)
print(json.dumps(codes))
"""


@pytest.fixture(scope="module")
def holder(secured: Secured) -> Iterator[pools.Machine]:
    """The running worker, with an actor of a driver on the head."""
    worker = running_worker(secured)
    head = secured.head
    started = secured.run(head, "sh", "-c",
                          'nohup "$@" < /dev/null > /tmp/holder.log 2>&1 & echo $!', "holder",
                          "timeout", "900", *RAY_ENV, PYTHON, "-c", HOLDER,
                          secured.cluster.gcs, worker.ip)
    pid = started.stdout.strip()
    assert pid.isdigit(), started.stderr
    deadline = time.monotonic() + 180
    while "pong" not in (log := secured.run(head, "cat", "/tmp/holder.log").stdout):
        assert time.monotonic() < deadline, log[-2000:]
        time.sleep(2)
    yield worker
    secured.run(head, "kill", pid)


@pytest.mark.parametrize("role", ["head", "worker"])
def test_every_listening_socket_is_on_the_private_address_or_loopback(
        secured: Secured, holder: pools.Machine, role: str) -> None:
    machine = secured.head if role == "head" else holder
    sockets = listening(secured, machine)
    print(f"\n{role} {machine.ip}: {sorted(sockets)}")
    outside = [s for s in sockets if not allowed(s, machine.ip)]
    assert outside == [], f"listening beyond {machine.ip} and loopback: {outside}"
    # Ray's gRPC servers are on the role's fixed ports, and a Ray worker process in the range.
    wildcard = {port for _, port, _ in filter(on_all_interfaces, sockets)}
    fixed = set(ANY_ADDRESS) - (set() if role == "head" else {GCS_PORT})
    assert fixed <= wildcard, sorted(sockets)
    assert wildcard & set(WORKER_PORTS), sorted(sockets)


@pytest.mark.parametrize("role", ["head", "worker"])
def test_every_port_on_all_interfaces_refuses_a_client_without_the_token(
        secured: Secured, holder: pools.Machine, role: str) -> None:
    """From the other node: each gRPC server on all interfaces answers UNAUTHENTICATED without
    the token, and serves the same call with it (so the method exists and the refusal is the
    token's)."""
    machine, client = (secured.head, holder) if role == "head" else (holder, secured.head)
    ports = sorted({port for _, port, _ in filter(on_all_interfaces, listening(secured, machine))}
                   - {SSH_PORT})
    assert len(ports) > 3, ports
    calls = [(f"{machine.ip}:{port}", ANY_ADDRESS[port][1] if port in ANY_ADDRESS
              else WORKER_METHOD) for port in ports]
    result = secured.run(client, "sudo", "-u", "ray", PYTHON, "-c", GRPC_CALLS, AUTH_FILE,
                         json.dumps(calls))
    assert result.returncode == 0, result.stderr[-2000:]
    codes = json.loads(result.stdout)
    print(f"\n{role} {machine.ip} (without the token, with it): {codes}")
    refused = {address for address, (without, _) in codes.items()
               if without == "UNAUTHENTICATED"}
    served = {address for address, (_, with_token) in codes.items()
              if with_token not in ("UNAUTHENTICATED", "UNIMPLEMENTED", "UNAVAILABLE",
                                    "DEADLINE_EXCEEDED")}
    assert refused == served == set(codes), codes


# ---------------------------------------------------------------- files with secrets


def secret_files(secured: Secured, machine: pools.Machine) -> dict[str, tuple[str, str]]:
    """path -> (mode, owner) of every file holding the token or a private key."""
    script = ("grep -rlsF -e \"$1\" -e 'PRIVATE KEY-----' " + " ".join(SECRET_DIRS)
              + " | grep -v '^/etc/ssh/ssh_host_' | sort -u"
              " | while read -r f; do stat -c '%n %a %U' \"$f\"; done")
    out = secured.run(machine, "sudo", "sh", "-c", script, "scan", secured.token,
                      timeout=300).stdout
    return {path: (mode, owner) for path, mode, owner in
            (line.rsplit(" ", 2) for line in out.splitlines() if line)}


@pytest.mark.parametrize("role", ["head", "worker"])
def test_files_with_secrets_are_0600_and_owned_by_their_user(secured: Secured,
                                                              role: str) -> None:
    machine = secured.head if role == "head" else running_worker(secured)
    found = secret_files(secured, machine)
    assert AUTH_FILE in found, found  # the scan does find secrets
    assert found[AUTH_FILE] == ("600", "ray"), found
    loose = {path: mode for path, (mode, _) in found.items()
             if int(mode, 8) & 0o077 or int(mode, 8) & 0o111}
    assert loose == {}, f"secrets readable by others: {loose}"
    owners = {path: owner for path, (_, owner) in found.items()
              if owner not in ("ray", "ops", "root")}
    assert owners == {}, owners
    in_home = {path: owner for path, (_, owner) in found.items()
               if path.startswith("/home/ops/") and owner != "ops"}
    assert in_home == {}, in_home


# ---------------------------------------------------------------- the token never shows


def test_the_token_is_in_no_encoding_in_the_agents_status_metrics_and_artifacts(
        secured: Secured) -> None:
    head = secured.head
    status = secured.run(head, "onprem-ray-agent", "status", "--state-dir", STATE_DIR,
                         "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["machines"], status.stderr
    metrics = secured.run(head, PYTHON, "-c", HTTP_GET.replace(
        ".status)", ".read().decode())"), f"http://{head.ip}:{AGENT_METRICS_PORT}/metrics")
    assert "onprem_ray_agent_machines" in metrics.stdout, metrics.stderr
    runs = secured.run(head, "sudo", "find", f"{STATE_DIR}/runner/artifacts", "-type", "f")
    artifacts = runs.stdout.split()
    assert any("retire" in path for path in artifacts), artifacts  # the retire runs' files
    # Every file, binary ones too (Ansible's caches): read as bytes, searched as Latin-1.
    dump = base64.b64decode(secured.run(
        head, "sudo", "sh", "-c", f"cat $(find {STATE_DIR} -type f ! -name '*.db' "
        "! -name '*.db-*') | base64 -w0", timeout=300).stdout).decode("latin-1")
    database = secured.run(head, "sudo", "sh", "-c",
                           f"cat {STATE_DIR}/state.db {STATE_DIR}/state.db-wal 2>/dev/null "
                           "| base64 -w0").stdout
    assert "retire_workers" in dump or "retire" in dump
    texts = {"status": status.stdout, "metrics": metrics.stdout, "artifacts": dump,
             "state store": base64.b64decode(database).decode("latin-1")}
    leaks = {name: secured.leaks(text) for name, text in texts.items()}
    assert leaks == {name: [] for name in texts}, leaks


# ---------------------------------------------------------------- the agent's privileges


def test_the_agent_runs_with_least_privilege(secured: Secured) -> None:
    """The agent's unit is rated at or below AGENT_EXPOSURE_MAX by systemd-analyze, and its
    running process is the login user's, with no new privileges, no capabilities and a system
    call filter. It works so: the fixture waited for its retire runs."""
    head = secured.head
    analysis = secured.run(head, "sudo", "systemd-analyze", "security", "--no-pager",
                           AGENT_UNIT)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", analysis.stdout)
    assert analysis.returncode == 0 and found, analysis.stdout[-2000:] + analysis.stderr
    exposure = float(found.group(1))
    print(f"\nsystemd-analyze security {AGENT_UNIT}: {exposure}")
    assert exposure <= AGENT_EXPOSURE_MAX, analysis.stdout
    shown = secured.run(head, "systemctl", "show", AGENT_UNIT, "--property",
                        "ActiveState,MainPID").stdout
    unit = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
    assert unit["ActiveState"] == "active" and int(unit["MainPID"]) > 0, unit
    pid = unit["MainPID"]
    user = secured.run(head, "ps", "-o", "user=", "-p", pid).stdout.strip()
    assert user == pools.SSH_USER, user  # the login user, not root
    status = dict(line.split(":", 1) for line in secured.run(
        head, "sudo", "cat", f"/proc/{pid}/status").stdout.splitlines() if ":" in line)
    process = {key: status[key].split() for key in
               ("Uid", "NoNewPrivs", "CapEff", "CapPrm", "CapBnd", "CapAmb", "Seccomp")}
    print(f"agent process {pid}: {process}")
    assert "0" not in process["Uid"], process  # no real, effective, saved or file uid root
    assert process["NoNewPrivs"] == ["1"], process
    assert all(process[key] == ["0000000000000000"]
               for key in ("CapEff", "CapPrm", "CapBnd", "CapAmb")), process
    assert process["Seccomp"] == ["2"], process  # a system call filter is in place
