"""Create and remove pools of machines (Docker containers) for tests and the demo.

A pool is a labelled Docker network plus labelled containers on it, an SSH key made for the
pool, the machines' host keys (read over `docker exec`, a channel we trust, so SSH verifies
them from the first contact), and a cluster file for the onprem.ray.cluster inventory plugin.
Everything the tool makes carries the label `onprem.ray.pool=<name>`, so `remove()` finds it
again even after a crash halfway through `create()`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.pool.images import SUITE, SUITES, ensure_images
from tests.pool.progress import step
from tests.pool.wheelhouse import REPO_ROOT

TOOL_LABEL = "onprem.ray.tool=test-pool"
POOL_LABEL = "onprem.ray.pool"
SSH_USER = "ops"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
HEAD_HOST_NUMBER = 10
READY_TIMEOUT_S = 90


class PoolError(RuntimeError):
    pass


@dataclass
class Machine:
    name: str
    container: str
    ip: str
    role: str  # "head" or "worker"
    suite: str = SUITE  # the Debian release it runs


@dataclass
class Pool:
    name: str
    subnet: str
    network: str
    state_dir: Path
    machines: list[Machine] = field(default_factory=list)

    @property
    def head(self) -> Machine:
        return next(m for m in self.machines if m.role == "head")

    @property
    def workers(self) -> list[Machine]:
        return [m for m in self.machines if m.role == "worker"]

    @property
    def private_key(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.state_dir / "ssh_config"

    @property
    def inventory(self) -> Path:
        return self.state_dir / "cluster.yml"

    def ssh_command(self, machine: Machine, *remote: str) -> list[str]:
        """An ssh argv for `remote` on `machine`, host key verified, no prompts.

        ssh hands the remote shell one joined string, so each word is quoted here.
        """
        return ["ssh", "-F", str(self.ssh_config), f"{SSH_USER}@{machine.ip}", "--",
                shlex.join(remote)]

    def ssh(self, machine: Machine, *remote: str, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.ssh_command(machine, *remote), capture_output=True,
                              text=True, check=check, timeout=timeout)


def state_root() -> Path:
    return Path(os.environ.get("ONPREM_RAY_POOL_DIR", REPO_ROOT / ".pool"))


def default_subnet(name: str) -> str:
    """A free /24 in 10.213.0.0/16: the name picks where to start looking, so a pool tends to
    get the same subnet each time, and the search skips whatever Docker or a route holds."""
    taken = [net for _, net in _subnets_in_use()]
    start = zlib.crc32(name.encode()) % 250
    for i in range(250):
        candidate = ipaddress.ip_network(f"10.213.{(start + i) % 250 + 1}.0/24")
        if not any(net.version == 4 and net.overlaps(candidate) for net in taken):
            return str(candidate)
    raise PoolError("no free /24 left in 10.213.0.0/16; choose one with --subnet")


def _docker(*args: str, check: bool = True, stdin: str | None = None) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, input=stdin,
                            check=False)
    if check and result.returncode != 0:
        raise PoolError(f"docker {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout


def _subnets_in_use() -> list[tuple[str, ipaddress.IPv4Network]]:
    """Subnets of every Docker network and every host route, with who holds them."""
    taken: list[tuple[str, ipaddress.IPv4Network]] = []
    ids = _docker("network", "ls", "--quiet").split()
    if ids:
        for net in json.loads(_docker("network", "inspect", *ids)):
            for cfg in (net.get("IPAM") or {}).get("Config") or []:
                try:
                    taken.append((f"docker network {net['Name']}",
                                  ipaddress.ip_network(cfg["Subnet"], strict=False)))
                except (KeyError, ValueError):
                    continue
    routes = subprocess.run(["ip", "-4", "-json", "route"], capture_output=True, text=True,
                            check=False)
    if routes.returncode == 0:
        for route in json.loads(routes.stdout or "[]"):
            dst = route.get("dst", "")
            if dst and dst != "default":
                try:
                    taken.append((f"host route {dst} dev {route.get('dev', '?')}",
                                  ipaddress.ip_network(dst, strict=False)))
                except ValueError:
                    continue
    return taken


def _check_subnet_free(subnet: ipaddress.IPv4Network) -> None:
    for holder, net in _subnets_in_use():
        if net.version == 4 and net.overlaps(subnet):
            raise PoolError(f"subnet {subnet} overlaps {net} ({holder}); choose another "
                            "with --subnet")


def _make_key(pool: Pool) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                    f"onprem-ray-pool-{pool.name}", "-f", str(pool.private_key)], check=True)
    return pool.private_key.with_suffix(".pub").read_text()


def _start_machine(pool: Pool, machine: Machine, image: str, public_key: str) -> None:
    _docker(
        "run", "--detach", "--name", machine.container, "--hostname", machine.name,
        "--network", pool.network, "--ip", machine.ip,
        "--label", TOOL_LABEL, "--label", f"{POOL_LABEL}={pool.name}",
        "--tmpfs", "/run", "--tmpfs", "/run/lock",
        "--volume", "/sys/fs/cgroup:/sys/fs/cgroup:ro",
        "--shm-size", "1g",
        image,
    )
    _docker("exec", "--interactive", machine.container, "sh", "-c",
            "umask 077 && cat > /home/ops/.ssh/authorized_keys && "
            "chown ops:ops /home/ops/.ssh/authorized_keys", stdin=public_key)


def _wait_ready(pool: Pool, machine: Machine) -> str:
    """Wait for systemd and sshd; return the machine's known_hosts line."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    state = ""
    while time.monotonic() < deadline:
        state = _docker("exec", machine.container, "systemctl", "is-system-running",
                        check=False).strip()
        if state in ("running", "degraded"):
            break
        time.sleep(0.5)
    else:
        raise PoolError(f"{machine.name} ({machine.ip}): systemd did not finish booting "
                        f"in {READY_TIMEOUT_S}s (state {state!r})")
    if state == "degraded":
        failed = _docker("exec", machine.container, "systemctl", "--failed", "--no-legend",
                         check=False)
        raise PoolError(f"{machine.name} ({machine.ip}): systemd is degraded: {failed.strip()}")
    return host_key_line(machine)


def host_key_line(machine: Machine) -> str:
    """The machine's known_hosts line: its ed25519 host key, read over `docker exec`."""
    host_key = _docker("exec", machine.container, "cat",
                       "/etc/ssh/ssh_host_ed25519_key.pub").split()
    return f"{machine.ip} {host_key[0]} {host_key[1]}\n"


def trust_host_key(pool: Pool, machine: Machine) -> None:
    """The pool's known_hosts holds the machine's current host key in place of any earlier
    one (its keys were made anew): the old line removed as an operator would (ssh-keygen -R),
    the new one read over `docker exec`, the channel the pool trusts."""
    subprocess.run(["ssh-keygen", "-R", machine.ip, "-f", str(pool.known_hosts)],
                   capture_output=True, check=True)
    with pool.known_hosts.open("a") as known:
        known.write(host_key_line(machine))


def _wait_ssh(pool: Pool, machine: Machine) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        result = pool.ssh(machine, "true", check=False, timeout=15)
        if result.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise PoolError(f"{machine.name} ({machine.ip}): ssh as {SSH_USER} failed: "
                            f"{result.stderr.strip()}")
        time.sleep(0.5)


def _write_files(pool: Pool, known_hosts: list[str]) -> None:
    pool.known_hosts.write_text("".join(known_hosts))
    pool.ssh_config.write_text(
        "Host *\n"
        f"  User {SSH_USER}\n"
        f"  IdentityFile {pool.private_key}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {pool.known_hosts}\n"
        "  StrictHostKeyChecking yes\n"
        "  BatchMode yes\n"
        "  ConnectTimeout 10\n"
        "  LogLevel ERROR\n"
    )
    workers = "".join(f"    - {m.ip}\n" for m in pool.workers)
    pool.inventory.write_text(
        f"# Written by the local test pool {pool.name!r}: remove it with\n"
        f"#   python -m tests.pool down {pool.name}\n"
        "plugin: onprem.ray.cluster\n"
        f"cluster_name: {pool.name}\n"
        "provider:\n"
        "  type: local\n"
        f"  head_ip: {pool.head.ip}\n"
        f"  worker_ips:{'' if workers else ' []'}\n{workers}"
        "auth:\n"
        f"  ssh_user: {SSH_USER}\n"
        f"  ssh_private_key: {pool.private_key}\n"
        f"  ssh_known_hosts_file: {pool.known_hosts}\n"
    )
    meta = asdict(pool) | {"state_dir": str(pool.state_dir)}
    (pool.state_dir / "pool.json").write_text(json.dumps(meta, indent=2) + "\n")


def _suites_for(name: str, machines: int, suites: list[str] | None) -> list[str]:
    """Each machine's Debian suite: one for all, or one per machine in order (head first)."""
    suites = suites or [SUITE]
    unknown = sorted(set(suites) - set(SUITES))
    if unknown:
        raise PoolError(f"pool {name}: unknown Debian suite {', '.join(unknown)}; the pool has "
                        f"{', '.join(SUITES)}")
    if len(suites) == 1:
        return suites * machines
    if len(suites) != machines:
        raise PoolError(f"pool {name}: {len(suites)} suites for {machines} machines; give one "
                        "suite, or one per machine (the head's first)")
    return suites


def create(name: str, machines: int = 3, subnet: str | None = None,
           suites: list[str] | None = None) -> Pool:
    """Create a pool of `machines` machines: the first is meant as head, the rest as workers.

    `suites`: the Debian release of every machine (one), or of each (head first); default
    bookworm.
    """
    if not NAME_PATTERN.match(name):
        raise PoolError(f"pool name {name!r}: use 1-20 of a-z, 0-9 and '-', starting with a "
                        "letter")
    if not 1 <= machines <= 50:
        raise PoolError(f"pool {name}: {machines} machines requested; 1 to 50 are supported")
    if load(name) is not None or _docker("ps", "-aq", "--filter", f"label={POOL_LABEL}={name}"):
        raise PoolError(f"pool {name!r} already exists; remove it first: "
                        f"python -m tests.pool down {name}")
    net = ipaddress.ip_network(subnet or default_subnet(name))
    if net.num_addresses < machines + HEAD_HOST_NUMBER + 2:
        raise PoolError(f"subnet {net} is too small for {machines} machines")
    _check_subnet_free(net)
    per_machine = _suites_for(name, machines, suites)
    images = {suite: ensure_images(suite) for suite in dict.fromkeys(per_machine)}
    state_dir = state_root() / name
    state_dir.mkdir(parents=True, exist_ok=True)
    pool = Pool(name=name, subnet=str(net), network=f"onprem-ray-{name}", state_dir=state_dir)
    for i in range(machines):
        pool.machines.append(Machine(
            name=f"{name}-node{i}", container=f"onprem-ray-{name}-node{i}",
            ip=str(net.network_address + HEAD_HOST_NUMBER + i),
            role="head" if i == 0 else "worker", suite=per_machine[i],
        ))
    try:
        with step(f"pool {name}: network {pool.network} ({net}) and {machines} machines"):
            _docker("network", "create", "--driver", "bridge", "--subnet", str(net),
                    "--label", TOOL_LABEL, "--label", f"{POOL_LABEL}={name}", pool.network)
            public_key = _make_key(pool)
            with ThreadPoolExecutor(max_workers=8) as ex:
                list(ex.map(lambda m: _start_machine(pool, m, images[m.suite], public_key),
                            pool.machines))
                known_hosts = list(ex.map(lambda m: _wait_ready(pool, m), pool.machines))
            _write_files(pool, known_hosts)
            with ThreadPoolExecutor(max_workers=8) as ex:
                list(ex.map(lambda m: _wait_ssh(pool, m), pool.machines))
    except BaseException:
        remove(name)
        raise
    return pool


def load(name: str) -> Pool | None:
    meta = state_root() / name / "pool.json"
    if not meta.exists():
        return None
    data = json.loads(meta.read_text())
    data["state_dir"] = Path(data["state_dir"])
    data["machines"] = [Machine(**m) for m in data["machines"]]
    return Pool(**data)


def remove(name: str | None) -> list[str]:
    """Remove what the tool made for pool `name` (every pool when None); return what went."""
    label = f"{POOL_LABEL}={name}" if name else TOOL_LABEL
    removed: list[str] = []
    containers = _docker("ps", "-aq", "--filter", f"label={label}").split()
    if containers:
        _docker("rm", "--force", "--volumes", *containers)
        removed += [f"container {c}" for c in containers]
    networks = _docker("network", "ls", "-q", "--filter", f"label={label}").split()
    if networks:
        _docker("network", "rm", *networks)
        removed += [f"network {n}" for n in networks]
    dirs = [state_root() / name] if name else [p.parent for p in state_root().glob("*/pool.json")]
    for d in dirs:
        if d.exists():
            shutil.rmtree(d)
            removed.append(f"directory {d}")
    return removed


def kill(machine: Machine) -> None:
    """The machine dies at once (`docker kill`: SIGKILL to its systemd, no clean stop)."""
    _docker("kill", machine.container)


def start(pool: Pool, machine: Machine) -> None:
    """A killed machine boots again, at its address, with its disk as it was; returns once
    systemd has booted and sshd answers."""
    _docker("start", machine.container)
    _wait_ready(pool, machine)
    _wait_ssh(pool, machine)


def reboot(pool: Pool, machine: Machine) -> None:
    """The machine shuts down cleanly and boots again (`docker restart`: the image's stop
    signal halts systemd); returns once systemd has booted and sshd answers."""
    _docker("restart", machine.container)
    _wait_ready(pool, machine)
    _wait_ssh(pool, machine)


def disconnect(pool: Pool, machine: Machine) -> None:
    """Cut the machine off the pool's network: it keeps running, nothing reaches it."""
    _docker("network", "disconnect", "--force", pool.network, machine.container)


def connect(pool: Pool, machine: Machine) -> None:
    """Put a machine cut off by `disconnect` back on the pool's network, at its address."""
    _docker("network", "connect", "--ip", machine.ip, pool.network, machine.container)


def names() -> list[str]:
    out = _docker("ps", "-a", "--filter", f"label={TOOL_LABEL}",
                  "--format", f'{{{{.Label "{POOL_LABEL}"}}}}')
    return sorted(set(out.split()))


def describe(pool: Pool) -> str:
    lines = [f"pool {pool.name}: {len(pool.machines)} machines on {pool.network} ({pool.subnet})"]
    lines += [f"  {m.role:6} {m.ip:15} {m.suite:9} {m.name}" for m in pool.machines]
    lines += [
        f"inventory:  {pool.inventory}",
        f"ssh:        ssh -F {pool.ssh_config} {pool.head.ip}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run: python -m tests.pool --help")
