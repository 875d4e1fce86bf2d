"""The kill loop: the agent SIGKILLed at random moments during its adds and retires, and after
each kill a check that nothing was lost. Prints one line per kill and a table of counts.

    python bench/chaos.py [--kills 50] [--seed N] [--pool chaos] [--keep]

A fresh pool (head + 3 workers), `up` with every worker prepared and none started
(min_workers 0), the agent under systemd (one iteration a second, idle timeout --idle-s,
failed machines retried after 5 s to 20 s, never quarantined: a kill during an add counts as a
failure of its machines, and 50 kills would otherwise quarantine the pool, as designed). A
detached actor holds the head's CPUs. Then the kills alternate:

- add: detached actors of a whole worker each (1 to 3 of them, at random) make the agent add
  workers; once `status --json` shows the add run under way, the agent is killed at once or
  after a random delay of up to --max-delay seconds;
- retire: the actors are killed, so the workers go idle and the agent retires them; the agent
  is killed the same way during the retire run.

After each kill: systemd starts the agent again (its unit restarts it after 10 s), the pool
settles (within --settle-s: no run under way, nothing joining or retiring, the actors running
or every worker gone), then the checks of tests/faults.py run: every machine recorded once
in a state that agrees with Ray, none in two runs, the store opens, the actors run. A kill
landed mid-run when the restarted agent recorded a run `interrupted`; one that came after the
run ended finds the run's outcome in its artifacts instead.

Exit status 1 when a kill was not survived or any count that must be 0 is not. A shorter loop
on a pool a test made: tests/e2e/test_kill_loop.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests import faults  # noqa: E402
from tests.cluster import Cluster  # noqa: E402
from tests.pool import pool as pools  # noqa: E402
from tests.pool.wheelhouse import ensure_wheelhouse  # noqa: E402

UNIT = "onprem-ray-agent.service"
STATE_DIR = "/var/lib/onprem-ray/agent"
STATUS = ["onprem-ray-agent", "status", "--state-dir", STATE_DIR, "--json", "--no-decide"]
RAY_PYTHON = ["sudo", "-u", "ray", "env", "RAY_AUTH_MODE=token",
              "RAY_AUTH_TOKEN_PATH=/etc/ray/auth_token", "/opt/ray/venv/bin/python", "-c"]
# The agent's settings for the loop (role variables of roles/head).
AGENT_SETTINGS = {"head_agent_enabled": "true", "head_agent_interval": "1",
                  "head_agent_backoff_base": "5", "head_agent_backoff_max": "20",
                  "head_agent_quarantine_after": "0"}
INTERRUPTED = "recorded as interrupted"  # the restarted agent's log line for a run it lost
DIAGNOSTICS = REPO_ROOT / ".cache" / "chaos"
BACK_WITHIN_S = 120.0  # systemd restarts the agent 10 s after it died
RUN_SEEN_WITHIN_S = 120.0  # how long to wait for the run to kill during

# Detached actors <name>-0 .. <name>-<count - 1> of `cpus` CPUs each, in namespace chaos; with
# a fifth argument, on the node of that address only (by its node resource).
CREATE = """
import sys, ray
ray.init(address=sys.argv[1], namespace="chaos", logging_level="ERROR")
@ray.remote
class Load:
    def where(self):
        return ray.util.get_node_ip_address()
name, cpus, count = sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
on = {"resources": {f"node:{sys.argv[5]}": 0.001}} if len(sys.argv) > 5 else {}
for i in range(count):
    Load.options(name=f"{name}-{i}", lifetime="detached", num_cpus=cpus,
                 get_if_exists=True, **on).remote()
"""
# Where each of those actors runs (JSON), once all run within the timeout; else an error.
PLACED = """
import json, sys, ray
ray.init(address=sys.argv[1], namespace="chaos", logging_level="ERROR")
name, count, timeout = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
actors = [ray.get_actor(f"{name}-{i}") for i in range(count)]
print(json.dumps(ray.get([a.where.remote() for a in actors], timeout=timeout)))
"""
KILL_ACTORS = """
import sys, ray
ray.init(address=sys.argv[1], namespace="chaos", logging_level="ERROR")
name, count = sys.argv[2], int(sys.argv[3])
for i in range(count):
    try:
        ray.kill(ray.get_actor(f"{name}-{i}"))
    except ValueError:
        pass
"""


@dataclass
class Chaos:
    """The pool, its cluster, and the agent on its head, as the loop sees them."""

    pool: pools.Pool
    cluster: Cluster
    worker_cpus: float = 0.0

    @property
    def head_ip(self) -> str:
        return self.pool.head.ip

    @property
    def inventory(self) -> list[str]:
        return [m.ip for m in self.pool.workers]

    def ssh(self, *remote: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        try:
            return self.pool.ssh(self.pool.head, *remote, check=False, timeout=timeout)
        except subprocess.TimeoutExpired as err:
            return subprocess.CompletedProcess(err.cmd, 124, "", f"timed out after {timeout} s")

    def ray(self, script: str, *args: str, timeout: float = 180
            ) -> subprocess.CompletedProcess[str]:
        return self.ssh(*RAY_PYTHON, script, self.cluster.gcs, *args, timeout=timeout)

    def status(self) -> tuple[dict[str, Any] | None, str]:
        """The agent's status (None and why when it does not answer)."""
        result = self.ssh(*STATUS, timeout=60)
        if result.returncode != 0:
            return None, f"status exited {result.returncode}: {result.stderr[-500:]}"
        try:
            return json.loads(result.stdout), ""
        except ValueError as err:
            return None, f"status printed no JSON ({err}): {result.stdout[-300:]}"

    def nodes(self) -> list[dict[str, Any]]:
        """Ray's ALIVE nodes; none when Ray does not answer (then every active record reads
        as not ALIVE, which the checks count)."""
        try:
            return self.cluster.nodes()
        except (subprocess.SubprocessError, ValueError):
            return []

    def unit(self) -> dict[str, str]:
        out = self.ssh("systemctl", "show", UNIT, "-p", "NRestarts,ActiveState,MainPID",
                       timeout=30).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal_since(self, since: float) -> str:
        return self.ssh("sudo", "journalctl", "-u", UNIT, "--no-pager", "-o", "cat",
                        "--since", f"@{since - 1:.0f}").stdout

    def placed(self, name: str, count: int, timeout: float) -> tuple[list[str] | None, str]:
        result = self.ray(PLACED, name, str(count), f"{timeout:.0f}", timeout=timeout + 120)
        if result.returncode != 0:
            last = result.stderr.strip().splitlines()[-1:]  # the exception raised
            return None, last[0] if last else f"exit status {result.returncode}"
        return json.loads(result.stdout), ""


def prepare(pool: pools.Pool, wheelhouse: Path, idle_s: float, workdir: Path,
            settings: dict[str, str] | None = None, **top_level: Any) -> Chaos:
    """`up` on the pool with the loop's settings (its cluster file written in `workdir`, the
    pool's own left as it is, `top_level` overriding its top-level keys, `settings` the agent's
    role variables in place of AGENT_SETTINGS); the head's CPUs held by an actor (`release`
    lets them go)."""
    source = yaml.safe_load(pool.inventory.read_text())
    source.update(min_workers=0, max_workers=len(pool.workers), idle_timeout_minutes=idle_s / 60)
    source.update(top_level)
    inventory = workdir / "chaos-cluster.yml"
    inventory.write_text(yaml.safe_dump(source, sort_keys=False))
    cluster = Cluster(pool=pool, wheelhouse=wheelhouse, inventory=inventory)
    agent = [arg for key, value in (settings or AGENT_SETTINGS).items()
             for arg in ("-e", f"{key}={value}")]
    cluster.playbook("up", "-e", "ray_up_workers=min", *agent, timeout=3600)
    chaos = Chaos(pool=pool, cluster=cluster)
    head = next(n for n in cluster.nodes() if n["head"])
    # The workers are the same machines as the head: one actor of the head's CPUs fills one.
    chaos.worker_cpus = float(head["resources"]["CPU"])
    hold_head(chaos)
    return chaos


def hold_head(chaos: Chaos) -> None:
    """The head's CPUs held by the detached actor `blocker-0`, on the head (`release` lets
    them go); kept when it runs already."""
    made = chaos.ray(CREATE, "blocker", str(chaos.worker_cpus), "1", chaos.head_ip)
    placed, error = chaos.placed("blocker", 1, 120)
    if made.returncode != 0 or placed != [chaos.head_ip]:
        raise RuntimeError(f"the head's blocker actor: {made.stderr[-1500:]} {error}")


def release(chaos: Chaos) -> None:
    """The pool as a later user finds it: the head's CPUs free, the agent stopped."""
    chaos.ray(KILL_ACTORS, "blocker", "1")
    chaos.ssh("sudo", "systemctl", "disable", "--now", UNIT)


@dataclass
class KillResult:
    number: int
    phase: str  # add or retire
    run: str  # the run seen under way when the kill was sent ('' if none was seen)
    delay_s: float
    killed_at: float  # the host's clock, which the pool's machines share
    landed: bool  # a run was recorded interrupted by the restarted agent
    survived: bool
    back_s: float
    settled_s: float
    report: faults.Report


@dataclass
class Outcome:
    kills: list[KillResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> faults.Report:
        return faults.Report().merge(*(kill.report for kill in self.kills))

    def counts(self) -> dict[str, int]:
        total = self.total.counts
        return {"kills sent": len(self.kills),
                "kills that landed mid-run (a run recorded interrupted)":
                    sum(k.landed for k in self.kills),
                "kills survived": sum(k.survived for k in self.kills),
                **{name: total[name] for name in faults.MUST_BE_ZERO}}

    @property
    def failed(self) -> bool:
        return any(not k.survived for k in self.kills) or not self.total.clean


def _wait(check: Callable[[], Any], timeout: float, step: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)


def _run_under_way(chaos: Chaos, kind: str, timeout: float) -> str:
    """The request id of a run of `kind` the agent has under way ('' if none within timeout)."""
    def seen() -> str:
        status, _ = chaos.status()
        runs = status["running"] if status else []
        return next((r["request_id"] for r in runs if r["kind"] == kind), "")
    return _wait(seen, timeout, step=0.2)


def _settle(chaos: Chaos, load: tuple[str, int] | None, timeout: float) -> faults.Report:
    """Wait until the pool has settled (every check clean and the actors' workers ALIVE, or
    with no load every worker gone), at most `timeout`; then the checks, the demand's too."""
    deadline = time.monotonic() + timeout
    while True:
        status, error = chaos.status()
        nodes = chaos.nodes()
        report = faults.check_pool(status, nodes, chaos.inventory, chaos.head_ip, error)
        alive = faults.alive_workers(nodes, chaos.head_ip)
        goal = len(alive) >= load[1] if load else not alive
        if (report.clean and goal) or time.monotonic() >= deadline:
            break
        time.sleep(2)
    if load:
        name, count = load
        placed, error = chaos.placed(name, count, max(10.0, deadline - time.monotonic()))
        cluster = {chaos.head_ip} | faults.alive_workers(chaos.nodes(), chaos.head_ip)
        report.merge(faults.check_demand(count, placed, cluster, error))
    return report


def _diagnose(chaos: Chaos, kill: KillResult) -> Path:
    """What the pool looked like after a kill whose checks found something."""
    DIAGNOSTICS.mkdir(parents=True, exist_ok=True)
    path = DIAGNOSTICS / f"{chaos.pool.name}-kill-{kill.number}.txt"
    status, error = chaos.status()
    log = chaos.journal_since(kill.killed_at)
    path.write_text("\n".join([*kill.report.messages, "", "status:",
                               json.dumps(status, indent=1) if status else error,
                               "", "Ray's ALIVE nodes:", json.dumps(chaos.nodes()),
                               "", "agent log since the kill:", log]))
    return path


def kill_once(chaos: Chaos, number: int, phase: str, load: tuple[str, int] | None,
              rng: random.Random, max_delay_s: float, settle_s: float) -> KillResult:
    run = _run_under_way(chaos, phase, timeout=RUN_SEEN_WITHIN_S)
    delay = 0.0 if rng.random() < 1 / 3 else rng.uniform(0, max_delay_s)
    time.sleep(delay)
    before = chaos.unit()
    killed_at, started = time.time(), time.monotonic()
    chaos.ssh("sudo", "systemctl", "kill", "--signal=KILL", UNIT)
    restarts = int(before.get("NRestarts", "0") or 0)

    def back() -> bool:
        now = chaos.unit()
        return (now.get("ActiveState") == "active" and now.get("MainPID") != before.get("MainPID")
                and int(now.get("NRestarts", "0") or 0) > restarts)
    is_back = bool(_wait(back, BACK_WITHIN_S))
    back_s = time.monotonic() - started
    report = _settle(chaos, load, settle_s)
    settled_s = time.monotonic() - started - back_s
    after = chaos.unit()
    # Survived: back by itself, answering, and not crashed again since.
    survived = (is_back and not report.counts[faults.STORE_UNREADABLE]
                and after.get("ActiveState") == "active"
                and int(after.get("NRestarts", "0") or 0) == restarts + 1)
    landed = INTERRUPTED in chaos.journal_since(killed_at)
    return KillResult(number=number, phase=phase, run=run, delay_s=delay, killed_at=killed_at,
                      landed=landed,
                      survived=survived, back_s=back_s, settled_s=settled_s, report=report)


def kill_loop(chaos: Chaos, kills: int, seed: int, max_delay_s: float = 10.0,
              settle_s: float = 300.0, log: Callable[[str], None] = print) -> Outcome:
    """`kills` SIGKILLs, alternately during an add (odd numbers) and a retire (even ones)."""
    rng = random.Random(seed)  # noqa: S311 (kill moments, not secrets)
    outcome, started = Outcome(), time.monotonic()
    load: tuple[str, int] | None = None
    for number in range(1, kills + 1):
        if number % 2:
            load = (f"load{number}", rng.randint(1, len(chaos.inventory)))
            made = chaos.ray(CREATE, load[0], str(chaos.worker_cpus), str(load[1]))
            if made.returncode != 0:
                log(f"kill {number}: the actors were not made: {made.stderr[-500:]}")
            phase = "add"
        else:
            if load:
                chaos.ray(KILL_ACTORS, *map(str, load))
            load, phase = None, "retire"
        result = kill_once(chaos, number, phase, load, rng, max_delay_s, settle_s)
        outcome.kills.append(result)
        found = {name: n for name, n in result.report.counts.items() if n}
        line = (f"kill {number}/{kills} during {phase}"
                f"{f' of {load[1]} worker(s)' if load else ''}: run {result.run or 'none seen'}"
                f" +{result.delay_s:.1f} s, {'landed mid-run' if result.landed else 'after it'}"
                f", back in {result.back_s:.0f} s{'' if result.survived else ' NOT SURVIVED'}"
                f", settled in {result.settled_s:.0f} s: {found or 'nothing lost'}")
        if found or not result.survived:
            line += f" (details: {_diagnose(chaos, result)})"
        log(line)
    if load:
        chaos.ray(KILL_ACTORS, *map(str, load))
    outcome.seconds = time.monotonic() - started
    return outcome


def table(outcome: Outcome) -> str:
    rows = [*outcome.counts().items(), ("time taken (s)", round(outcome.seconds))]
    width = max(len(name) for name, _ in rows)
    lines = [f"| {'':<{width}} | {'count':>5} |", f"|{'-' * (width + 2)}|{'-' * 7}|"]
    lines += [f"| {name:<{width}} | {value:>5} |" for name, value in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=None, help="default: from the clock")
    parser.add_argument("--pool", default="chaos")
    parser.add_argument("--keep", action="store_true", help="leave the pool running")
    parser.add_argument("--idle-s", type=float, default=10.0, help="the idle timeout, seconds")
    parser.add_argument("--max-delay", type=float, default=10.0,
                        help="the longest wait between seeing a run and the kill, seconds")
    parser.add_argument("--settle-s", type=float, default=300.0,
                        help="how long the pool may take to settle after a kill, seconds")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int(time.time())
    # ansible-playbook of this Python's environment, as the tests find it.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"

    wheelhouse = ensure_wheelhouse()
    pools.remove(args.pool)
    pool = pools.create(args.pool, machines=4)
    try:
        print("up (Ray installed from the wheelhouse, workers prepared, none started) ...",
              flush=True)
        chaos = prepare(pool, wheelhouse, args.idle_s, pool.state_dir)
        print(f"kill loop: {args.kills} kills, seed {seed}", flush=True)
        outcome = kill_loop(chaos, args.kills, seed, args.max_delay, args.settle_s,
                            log=lambda line: print(line, flush=True))
    finally:
        if not args.keep:
            pools.remove(args.pool)
    print(f"\nKill loop on a local pool of 4 machines (head + 3 workers), seed {seed}, idle "
          f"timeout {args.idle_s:.0f} s, one iteration a second; kills alternate between an "
          f"add and a retire, at once or up to {args.max_delay:.0f} s after the run was seen\n")
    print(table(outcome))
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    sys.exit(main())
