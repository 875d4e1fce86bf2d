"""Adapters: the agent's only contact with Ray, ansible-runner, the disk and Prometheus."""
