"""The agent's side of `up`'s claim (the files: plugins/module_utils/agent_claims.py).

Each iteration runs holding up-claim.lock: it reads `up`'s claim (up-claim.json), decides and
acts, then publishes the machines in its runs (runs-under-way.json). up_claim takes the same
lock to check that none of the workers it starts is in one of the agent's runs and to write
its claim (and, as `up`'s last task, its end with the workers it released), so a claim never
lands between the agent's reading and its starting a run.

The claim file stays while the claim is open: the agent reads it every iteration (a restarted
agent, or a store rebuilt meanwhile, still sees it), and removes it once it is ended and
applied, or expired.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from ansible_collections.onprem.ray.plugins.module_utils import agent_claims

from onprem_ray_agent.model import Claim
from onprem_ray_agent.store import StoreError

log = logging.getLogger("onprem_ray_agent")


class ClaimBox:
    """up-claim.json and runs-under-way.json in the agent's state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self._published: dict[str, str] | None = None
        self._refused = ""  # the last bad claim file reported, reported once

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the claim lock (up_claim holds it for milliseconds)."""
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            lock = agent_claims.locked(self.state_dir)
            lock.__enter__()
        except OSError as err:
            raise StoreError(f"up's claim lock in {self.state_dir} cannot be taken: {err}; "
                             "the state directory and its files must be the agent's user's"
                             ) from err
        try:
            yield
        finally:
            lock.__exit__(None, None, None)

    def read(self) -> Claim | None:
        """`up`'s latest claim; None when there is none or it cannot be read (logged)."""
        path = self.state_dir / agent_claims.CLAIM_FILE
        try:
            data = agent_claims.read_json(path)
            return None if data is None else _claim(data)
        except (OSError, ValueError, TypeError) as err:
            if str(err) != self._refused:
                self._refused = str(err)
                log.warning("up's claim %s is ignored: %s", path, err)
            return None

    def consume(self, claim: Claim) -> None:
        """Remove the claim file once `claim` is ended (or expired) and recorded in the store,
        if the file still holds `claim` as it was read (not a newer claim, nor its end written
        meanwhile)."""
        path = self.state_dir / agent_claims.CLAIM_FILE
        with contextlib.suppress(FileNotFoundError):
            if self.read() == claim:
                path.unlink()

    def publish(self, runs: Mapping[str, str]) -> None:
        """Write which machines the agent's runs have, when that changed."""
        runs = dict(runs)
        if runs == self._published:
            return
        agent_claims.write_json(str(self.state_dir / agent_claims.RUNS_FILE),
                                {"agent_pid": os.getpid(), "runs": runs})
        self._published = runs


def _claim(data: dict) -> Claim:
    claim_id, at, ips = data.get("claim_id"), data.get("at"), data.get("ips")
    released, ended = data.get("released", []), data.get("ended", False)
    if not isinstance(ended, bool):
        raise ValueError(f"ended is {ended!r}, not true or false")
    if not isinstance(at, int | float) or isinstance(at, bool) or not math.isfinite(at):
        raise ValueError(f"at is {at!r}, not a time")
    for key, value in (("ips", ips), ("released", released)):
        if not isinstance(value, list) or not all(isinstance(ip, str) for ip in value):
            raise ValueError(f"{key} is {value!r}, not a list of addresses")
    if not isinstance(claim_id, str):
        raise ValueError(f"claim_id is {claim_id!r}")
    return Claim(claim_id=claim_id, at=float(at), ips=frozenset(ips),
                 released=frozenset(released), ended=ended)
