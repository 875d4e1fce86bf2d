"""onprem-ray-agent: demand-driven scale up and down of a fixed pool of machines."""

__version__ = "0.1.0"

# The agent's Prometheus endpoint; here so that commands that need no metrics (plan) import
# no metrics library.
DEFAULT_METRICS_PORT = 9480
