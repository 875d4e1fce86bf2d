"""The worker table and the agent's states as get-worker-ips shows them."""

from onprem_ray_cli import agent, info


def test_worker_table_aligns_columns():
    rows = [{"ip": "10.0.0.2", "node_type": "cpu", "state": "active"},
            {"ip": "10.0.0.10", "node_type": "gpu-big", "state": "spare"}]
    assert info.worker_table(rows) == ("10.0.0.2   cpu      active\n"
                                       "10.0.0.10  gpu-big  spare\n")
    assert info.worker_table([]) == ""


def test_machine_states_from_the_agents_status_json():
    status = {"machines": [{"ip": "10.0.0.2", "state": "active", "node_type": "cpu"},
                           {"ip": "10.0.0.3", "state": "spare", "node_type": "cpu"}]}
    assert agent.machine_states(status) == {"10.0.0.2": "active", "10.0.0.3": "spare"}
    assert agent.machine_states({}) == {}


def test_the_agent_commands_quote_and_name_the_head_roles_paths():
    assert agent.status_command(as_json=True, decide=False) == (
        "/usr/local/bin/onprem-ray-agent status --state-dir /var/lib/onprem-ray/agent "
        "--json --no-decide")
    assert agent.journal_command(follow=True, lines=20).endswith(
        "--unit onprem-ray-agent.service --no-pager --lines 20 --output short-iso --follow")
