"""The environment the CLI's playbook runs get from it."""

from __future__ import annotations

from onprem_ray_cli.runs import environment


def test_host_keys_are_checked_unless_the_environment_says_otherwise():
    # Unset, ansible-runner would set it False, and ssh would take Ansible's
    # StrictHostKeyChecking=no before the inventory's own option.
    assert environment({"PATH": "/usr/bin"})["ANSIBLE_HOST_KEY_CHECKING"] == "True"
    given = {"PATH": "/usr/bin", "ANSIBLE_HOST_KEY_CHECKING": "False"}
    assert environment(given)["ANSIBLE_HOST_KEY_CHECKING"] == "False"
