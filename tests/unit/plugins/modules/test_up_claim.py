"""onprem.ray.up_claim: the claim is written under the lock, only once none of its workers is
in a run of a running agent; a run that ends lets it through; check mode writes nothing. The
end marks the claim ended and takes the workers `up` did not bring ALIVE out of it; a claim
the agent removed gets the release alone; a newer claim is left as it is."""

from __future__ import annotations

import json
import os
import pwd
import threading
import time

import pytest
from ansible_collections.onprem.ray.plugins.module_utils import agent_claims
from ansible_collections.onprem.ray.plugins.modules import up_claim

# As root, another user: the files must be the agent's user's, not the writer's.
OWNER = "nobody" if os.getuid() == 0 else pwd.getpwuid(os.getuid()).pw_name
IPS = ["10.0.1.2", "10.0.1.1"]


def agent_runs(state_dir, runs: dict) -> None:
    agent_claims.write_json(str(state_dir / agent_claims.RUNS_FILE),
                            {"agent_pid": os.getpid(), "runs": runs})


def claim_of(state_dir) -> dict:
    return json.loads((state_dir / agent_claims.CLAIM_FILE).read_text())


def test_the_first_up_makes_the_state_directory_and_claims(run_module, tmp_path) -> None:
    state_dir = tmp_path / "agent"
    before = time.time()
    code, result = run_module(up_claim, {"ips": IPS, "state_dir": str(state_dir),
                                         "owner": OWNER})
    assert code == 0 and result["changed"], result
    assert (state_dir.stat().st_mode & 0o777, state_dir.stat().st_uid) == (
        0o700, pwd.getpwnam(OWNER).pw_uid)
    claim = claim_of(state_dir)
    assert claim["ips"] == sorted(IPS) and claim["claim_id"] == result["claim_id"]
    assert claim["claim_id"].startswith("up-") and before <= claim["at"] <= time.time()
    # the agent (the owner) can read the claim and lock the lock file
    for name in (agent_claims.CLAIM_FILE, agent_claims.LOCK_FILE):
        stat = (state_dir / name).stat()
        assert (stat.st_mode & 0o777, stat.st_uid) == (0o600, pwd.getpwnam(OWNER).pw_uid)


def test_workers_of_other_runs_do_not_hold_the_claim_up(run_module, tmp_path) -> None:
    agent_runs(tmp_path, {"10.0.1.3": "add-cpu-1"})
    code, result = run_module(up_claim, {"ips": IPS, "state_dir": str(tmp_path),
                                         "owner": OWNER})
    assert code == 0 and result["waited_for"] == {}
    assert claim_of(tmp_path)["ips"] == sorted(IPS)


def test_a_worker_in_an_agents_run_is_waited_for_then_claimed(run_module, tmp_path) -> None:
    agent_runs(tmp_path, {"10.0.1.1": "add-cpu-1"})
    ended = threading.Timer(1.0, agent_runs, (tmp_path, {}))
    ended.start()
    try:
        started = time.monotonic()
        code, result = run_module(up_claim, {"ips": IPS, "state_dir": str(tmp_path),
                                             "owner": OWNER, "timeout": 60})
    finally:
        ended.cancel()
    assert code == 0 and result["waited_for"] == {"10.0.1.1": "add-cpu-1"}, result
    assert time.monotonic() - started >= 1.0
    assert claim_of(tmp_path)["ips"] == sorted(IPS)


def test_a_run_that_does_not_end_fails_the_claim_and_writes_nothing(
        run_module, tmp_path) -> None:
    agent_runs(tmp_path, {"10.0.1.1": "add-cpu-1"})
    code, result = run_module(up_claim, {"ips": IPS, "state_dir": str(tmp_path),
                                         "owner": OWNER, "timeout": 1})
    assert code == 1 and result["failed"]
    assert "10.0.1.1 (run add-cpu-1)" in result["msg"], result["msg"]
    assert "Ray was started on no worker" in result["msg"]
    assert not (tmp_path / agent_claims.CLAIM_FILE).exists()


def test_check_mode_writes_nothing(run_module, tmp_path) -> None:
    code, result = run_module(up_claim, {"ips": IPS, "state_dir": str(tmp_path / "agent"),
                                         "owner": OWNER}, check=True)
    assert code == 0 and result["changed"]
    assert not (tmp_path / "agent").exists()
    code, result = run_module(up_claim, {"ips": IPS, "state_dir": str(tmp_path),
                                         "owner": OWNER}, check=True)
    assert code == 0 and result["changed"]
    assert not (tmp_path / agent_claims.CLAIM_FILE).exists()


# ---------------------------------------------------------------- end (and release)


def end(run_module, state_dir, claim_id, ips, check=False, state="ended"):
    return run_module(up_claim, {"state": state, "claim_id": claim_id, "ips": ips,
                                 "state_dir": str(state_dir), "owner": OWNER}, check=check)


def test_up_ends_its_claim_with_no_worker_to_release(run_module, tmp_path) -> None:
    """A successful `up`: the claim is marked ended (the agent lets go of its workers)."""
    tmp_path = tmp_path / "agent"
    claimed = run_module(up_claim, {"ips": IPS, "state_dir": str(tmp_path),
                                    "owner": OWNER})[1]
    written = claim_of(tmp_path)
    code, result = end(run_module, tmp_path, claimed["claim_id"], [])
    assert code == 0 and result["changed"] and result["ended"], result
    assert result["released"] == []
    assert claim_of(tmp_path) == dict(written, released=[], ended=True)
    # ended already: nothing changes
    code, result = end(run_module, tmp_path, claimed["claim_id"], [])
    assert code == 0 and not result["changed"] and result["ended"]


def test_the_end_before_the_agent_read_the_claim_takes_the_released_out_of_it(
        run_module, tmp_path) -> None:
    tmp_path = tmp_path / "agent"  # made by the claim, the agent's user's
    claimed = run_module(up_claim, {"ips": IPS, "state_dir": str(tmp_path),
                                    "owner": OWNER})[1]
    written = claim_of(tmp_path)
    code, result = end(run_module, tmp_path, claimed["claim_id"], ["10.0.1.2"])
    assert code == 0 and result["changed"] and result["released"] == ["10.0.1.2"], result
    assert claim_of(tmp_path) == dict(written, ips=["10.0.1.1"], released=["10.0.1.2"],
                                      ended=True)
    stat = (tmp_path / agent_claims.CLAIM_FILE).stat()
    assert (stat.st_mode & 0o777, stat.st_uid) == (0o600, pwd.getpwnam(OWNER).pw_uid)
    # the same end again changes nothing; another release adds to it
    code, result = end(run_module, tmp_path, claimed["claim_id"], ["10.0.1.2"])
    assert code == 0 and not result["changed"]
    code, result = end(run_module, tmp_path, claimed["claim_id"], ["10.0.1.1"])
    assert result["changed"] and claim_of(tmp_path)["ips"] == []
    assert claim_of(tmp_path)["released"] == sorted(IPS)


def test_the_end_of_a_claim_the_agent_removed_writes_the_release_alone(
        run_module, tmp_path) -> None:
    claimed = run_module(up_claim, {"ips": IPS, "state_dir": str(tmp_path),
                                    "owner": OWNER})[1]
    (tmp_path / agent_claims.CLAIM_FILE).unlink()  # expired, and removed by the agent
    before = time.time()
    code, result = end(run_module, tmp_path, claimed["claim_id"], ["10.0.1.2"])
    assert code == 0 and result["changed"] and result["ended"], result
    written = claim_of(tmp_path)
    assert (written["claim_id"], written["ips"], written["released"], written["ended"]) == (
        claimed["claim_id"], [], ["10.0.1.2"], True)
    assert before <= written["at"] <= time.time()


def test_the_end_of_a_removed_claim_with_nothing_to_release_writes_nothing(
        run_module, tmp_path) -> None:
    claimed = run_module(up_claim, {"ips": IPS, "state_dir": str(tmp_path),
                                    "owner": OWNER})[1]
    (tmp_path / agent_claims.CLAIM_FILE).unlink()
    code, result = end(run_module, tmp_path, claimed["claim_id"], [])
    assert code == 0 and not result["changed"] and result["ended"], result
    assert not (tmp_path / agent_claims.CLAIM_FILE).exists()


@pytest.mark.parametrize("released", [[], ["10.0.1.2"]])
def test_the_end_leaves_a_newer_claim_as_it_is(run_module, tmp_path, released) -> None:
    newer = {"claim_id": "up-2000000-0000abcd", "at": time.time(), "ips": IPS}
    agent_claims.write_json(str(tmp_path / agent_claims.CLAIM_FILE), newer)
    code, result = end(run_module, tmp_path, "up-1000000-0000abcd", released)
    assert code == 0 and not result["changed"] and result["released"] == []
    assert not result["ended"] and "up-2000000-0000abcd" in result["msg"]
    assert claim_of(tmp_path) == newer


def test_the_end_in_check_mode_writes_nothing(run_module, tmp_path) -> None:
    claimed = run_module(up_claim, {"ips": IPS, "state_dir": str(tmp_path),
                                    "owner": OWNER})[1]
    written = claim_of(tmp_path)
    for released in ([], ["10.0.1.2"]):
        code, result = end(run_module, tmp_path, claimed["claim_id"], released, check=True)
        assert code == 0 and result["changed"] and result["released"] == released
        assert claim_of(tmp_path) == written
    (tmp_path / agent_claims.CLAIM_FILE).unlink()
    code, result = end(run_module, tmp_path, claimed["claim_id"], ["10.0.1.2"], check=True)
    assert code == 0 and result["changed"]
    assert not (tmp_path / agent_claims.CLAIM_FILE).exists()
    code, result = end(run_module, tmp_path / "none", claimed["claim_id"], ["10.0.1.2"])
    assert code == 0 and not result["changed"] and not (tmp_path / "none").exists()


def test_released_is_the_former_name_of_ended(run_module, tmp_path) -> None:
    claimed = run_module(up_claim, {"ips": IPS, "state_dir": str(tmp_path),
                                    "owner": OWNER})[1]
    code, result = end(run_module, tmp_path, claimed["claim_id"], ["10.0.1.2"],
                       state="released")
    assert code == 0 and result["changed"] and result["ended"], result
    assert claim_of(tmp_path)["ended"] is True
    assert claim_of(tmp_path)["released"] == ["10.0.1.2"]


@pytest.mark.parametrize("state", ["ended", "released"])
def test_the_end_needs_the_claims_id(run_module, tmp_path, state) -> None:
    code, result = run_module(up_claim, {"state": state, "ips": IPS,
                                         "state_dir": str(tmp_path)})
    assert code == 1 and "claim_id" in result["msg"], result
    code, result = end(run_module, tmp_path, "add-cpu-1", IPS, state=state)
    assert code == 1 and "no claim of up" in result["msg"], result
    assert not (tmp_path / agent_claims.CLAIM_FILE).exists()
