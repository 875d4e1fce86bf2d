"""The pure parts of the SSH commands: what runs on the machine, what rsync and OpenSSH get,
how a job's logs are followed."""

from __future__ import annotations

import dataclasses
import shlex

import pytest
from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_model import Auth

from onprem_ray_cli import errors, jobs, resolve, shell, ssh, submit, transfer

RAY_YAML = """\
cluster_name: lab
provider: {type: local, head_ip: 10.0.0.1, worker_ips: [10.0.0.2]}
auth: {ssh_user: ops, ssh_known_hosts_file: KNOWN}
"""


@pytest.fixture
def cluster(tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    path = tmp_path / "ray.yaml"
    path.write_text(RAY_YAML.replace("KNOWN", str(known)))
    return resolve.load(str(path)).cluster


def test_a_command_runs_in_a_login_shell_quoted_whole():
    assert shell.wrap("echo 'a b'; exit 3") == "bash -lc 'echo '\"'\"'a b'\"'\"'; exit 3'"
    assert shlex.split(shell.wrap("x; y")) == ["bash", "-lc", "x; y"]


def test_tmux_and_screen_keep_the_command_running_in_a_named_session():
    tmux = shell.wrap("python job.py", tmux=True, host="10.0.0.1")
    assert "tmux new-session -d -s onprem-ray-$$ bash -lc 'python job.py; exec bash'" in tmux
    assert "tmux is not installed on 10.0.0.1" in tmux and "exit 127" in tmux
    screen = shell.wrap("python job.py", screen=True, host="10.0.0.1")
    assert "screen -L -dmS onprem-ray-$$ bash -lc 'python job.py; exec bash'" in screen
    with pytest.raises(errors.CliError, match="exclude each other"):
        shell.wrap("x", tmux=True, screen=True)


def test_openssh_verifies_host_keys_with_the_clusters_file_and_key(cluster, tmp_path):
    argv = ssh.ssh_argv(cluster)
    assert argv[:3] == ["ssh", "-l", "ops"]
    assert "StrictHostKeyChecking=yes" in argv
    assert f"UserKnownHostsFile={tmp_path / 'known_hosts'}" in argv
    assert not any("accept-new" in a or "StrictHostKeyChecking=no" in a for a in argv)


def test_without_a_known_hosts_file_the_users_own_is_used(cluster, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    plain = dataclasses.replace(cluster, auth=Auth(ssh_user="ops"))
    assert ssh.known_hosts_file(plain) == tmp_path / ".ssh" / "known_hosts"
    assert f"UserKnownHostsFile={tmp_path}/.ssh/known_hosts" in ssh.ssh_argv(plain)


def test_rsync_up_and_down_argv(cluster):
    up = transfer.rsync_argv(cluster, "10.0.0.2", "data/", "dst dir/", up=True)
    assert up[:4] == ["rsync", "-az", "-s", "-e"]
    assert shlex.split(up[4])[0] == "ssh" and up[5:] == ["data/", "10.0.0.2:dst dir/"]
    down = transfer.rsync_argv(cluster, "10.0.0.1", "results/", "./r", up=False)
    assert down[5:] == ["10.0.0.1:results/", "./r"]


def test_submit_runs_the_script_as_rays_user_with_the_address_and_token():
    command = submit.run_command("job.py", ["--n", "a b"], "10.0.0.1:6379")
    assert shlex.split(command) == [
        "sudo", "-n", "-u", "ray", "env", "RAY_AUTH_MODE=token",
        "RAY_AUTH_TOKEN_PATH=/etc/ray/auth_token", "RAY_ADDRESS=10.0.0.1:6379",
        "PYTHONUNBUFFERED=1", "/opt/ray/venv/bin/python", "job.py", "--n", "a b"]


class FakeApi:
    """A job whose log grows over three polls, then ends with `final`."""

    def __init__(self, final: str) -> None:
        self.polls = 0
        self.final = final

    def status(self, job):
        self.polls += 1
        return "RUNNING" if self.polls < 3 else self.final

    def logs(self, job):
        return "".join(f"line {i}\n" for i in range(self.polls))


@pytest.mark.parametrize(("final", "code"), [("SUCCEEDED", 0), ("FAILED", 1), ("STOPPED", 1)])
def test_following_a_job_prints_its_log_once_and_exits_by_its_status(final, code, capsys):
    assert jobs.follow(FakeApi(final), "raysubmit_1", poll_s=0) == code
    captured = capsys.readouterr()
    assert captured.out == "line 0\nline 1\nline 2\n"
    assert f"job raysubmit_1: {final}" in captured.err
