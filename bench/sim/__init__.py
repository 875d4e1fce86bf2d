"""A simulated Ray cluster and simulated provisioning around the agent's real decision
(`onprem_ray_agent.policy.decide`) and lifecycle (`onprem_ray_agent.transitions`): what
autoscaling costs and how long demand waits, over a day of demand. `bench/simulate.py` runs it.
"""
