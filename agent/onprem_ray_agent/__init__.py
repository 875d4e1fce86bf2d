"""onprem-ray-agent: demand-driven scale up and down of a fixed pool of machines."""

__version__ = "0.1.0"
