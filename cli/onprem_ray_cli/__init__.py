"""onprem-ray: the operator's command for a Ray cluster on machines of one's own."""

from importlib import metadata

try:
    __version__ = metadata.version("onprem-ray")
except metadata.PackageNotFoundError:  # a checkout that is not installed
    __version__ = "0.1.0"
