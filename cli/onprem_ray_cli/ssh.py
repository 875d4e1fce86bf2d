"""SSH to the cluster's machines through fabric, as the playbooks reach them: the cluster
file's user, key and proxy command, host keys verified (never added on the fly).

Host keys come from the cluster's `auth.ssh_known_hosts_file` when it names one (then only
from it), else from ~/.ssh/known_hosts, where `up` (Ansible, accept-new) records them.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import signal
from pathlib import Path

import paramiko
from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_model import Cluster
from fabric import Connection

from onprem_ray_cli import errors

CONNECT_TIMEOUT_S = 15
# paramiko logs a traceback for a refused or cut connection: the CliError says it in one line.
logging.getLogger("paramiko").setLevel(logging.CRITICAL)


def address_of(cluster: Cluster, host: str) -> str:
    """Where this machine reaches `host` (the head may have an external address)."""
    return cluster.head_ssh_address if host == cluster.head_ip else host


def role_of(cluster: Cluster, host: str) -> str:
    return "head" if host == cluster.head_ip else "worker"


def connect(cluster: Cluster, host: str) -> Connection:
    """An open, verified connection to `host`; a CliError says why not and what to do."""
    auth = cluster.auth
    kwargs: dict = {"look_for_keys": auth.ssh_private_key is None}
    if auth.ssh_private_key:
        kwargs["key_filename"] = auth.ssh_private_key
    connection = Connection(address_of(cluster, host), user=auth.ssh_user,
                            connect_timeout=CONNECT_TIMEOUT_S, connect_kwargs=kwargs,
                            gateway=auth.ssh_proxy_command or None)
    client = connection.client
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    known_hosts = known_hosts_file(cluster)
    if auth.ssh_known_hosts_file:
        client.load_host_keys(str(known_hosts))
    elif known_hosts.is_file():
        client.load_system_host_keys(str(known_hosts))
    try:
        connection.open()
    except paramiko.BadHostKeyException as err:
        raise errors.CliError(
            f"{role_of(cluster, host)} {host}: its SSH host key does NOT match the one in "
            f"{known_hosts} ({err.key.get_name()}). If the machine was reinstalled, remove "
            f"its line (ssh-keygen -R {host} -f {known_hosts}) after checking the new key.",
            errors.HOST_KEY) from None
    except paramiko.SSHException as err:
        if "not found in known_hosts" in str(err):
            raise errors.CliError(
                f"{role_of(cluster, host)} {host}: its SSH host key is not in {known_hosts}, "
                "and keys are never accepted unverified here. Run `onprem-ray up` (it records "
                "keys on first contact), or add the key after checking it.",
                errors.HOST_KEY) from None
        raise _unreachable(cluster, host, str(err)) from None
    except (OSError, EOFError) as err:
        raise _unreachable(cluster, host, str(err) or type(err).__name__) from None
    return connection


def _unreachable(cluster: Cluster, host: str, cause: str) -> errors.CliError:
    return errors.CliError(
        f"{role_of(cluster, host)} {host}: cannot be reached over SSH as "
        f"{cluster.auth.ssh_user} ({cause}). Is the machine up and its sshd running? "
        f"Check with: ssh {cluster.auth.ssh_user}@{address_of(cluster, host)}",
        errors.UNREACHABLE)


def known_hosts_file(cluster: Cluster) -> Path:
    if cluster.auth.ssh_known_hosts_file:
        return Path(cluster.auth.ssh_known_hosts_file)
    return Path.home() / ".ssh" / "known_hosts"


def ssh_argv(cluster: Cluster) -> list[str]:
    """OpenSSH's command with the same user, key and host-key checking (for rsync's -e)."""
    auth = cluster.auth
    argv = ["ssh", "-l", auth.ssh_user, "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
            "-o", f"UserKnownHostsFile={known_hosts_file(cluster)}"]
    if auth.ssh_private_key:
        argv += ["-i", auth.ssh_private_key, "-o", "IdentitiesOnly=yes"]
    if auth.ssh_proxy_command:
        argv += ["-o", f"ProxyCommand={auth.ssh_proxy_command}"]
    return argv


def login_shell(command: str) -> str:
    """`command` run by a login shell, which reads the head's /etc/profile.d settings (Ray's
    commands on PATH, RAY_AUTH_MODE; the token is the login user's ~/.ray/auth_token)."""
    return "bash -lc " + shlex.quote(command)


@contextlib.contextmanager
def interrupt_closes(connection: Connection):
    """Ctrl-C during a command run without a pty: fabric can only re-raise it, then waits for
    the command's output to end (which `journalctl -f` or a server never does); closing the
    connection ends it."""
    previous = signal.getsignal(signal.SIGINT)

    def close(_signum, _frame):
        connection.close()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, close)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
