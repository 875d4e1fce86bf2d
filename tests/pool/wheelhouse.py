"""Download the nodes' Python packages once on the host: the containers cannot reach an index.

The wheelhouse has one directory per Python and CPU of the pool's node images (cp311-x86_64/,
cp313-x86_64/), laid out as the ray role expects, each downloaded with pip for that Python and
the image's glibc (pip download --python-version --platform --only-binary=:all:).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import subprocess
import sys
from pathlib import Path

from tests.pool.progress import step

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_REQUIREMENTS = REPO_ROOT / "requirements" / "node.txt"
# The node images' Python and glibc, by Debian suite.
NODE_OS = {
    "bookworm": {"python": "3.11", "glibc": "2.36"},
    "trixie": {"python": "3.13", "glibc": "2.41"},
}
# Bump when the layout or the download command changes.
LAYOUT_VERSION = "per-python-1"


def _wheelhouse_utils():
    """The collection's wheelhouse helpers (plain Python), loaded from the checkout."""
    path = REPO_ROOT / "plugins" / "plugin_utils" / "wheelhouse.py"
    spec = importlib.util.spec_from_file_location("onprem_ray_wheelhouse_utils", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "onprem-ray"
    return Path(os.environ.get("ONPREM_RAY_CACHE", default))


def ensure_wheelhouse(requirements: Path = NODE_REQUIREMENTS,
                      suites: tuple[str, ...] = ("bookworm",)) -> Path:
    """Return a wheelhouse for `requirements` on the nodes of `suites`, downloading what lacks."""
    key = hashlib.sha256(requirements.read_bytes() + LAYOUT_VERSION.encode()).hexdigest()[:16]
    root = cache_root() / "wheelhouse" / key
    utils = _wheelhouse_utils()
    arch = platform.machine()
    for suite in dict.fromkeys(suites):
        node = NODE_OS[suite]
        target = root / utils.tag_dir(node["python"], arch)
        done = target / ".complete"
        if done.exists():
            print(f"[pool] wheelhouse {target} is cached", file=sys.stderr, flush=True)
            continue
        target.mkdir(parents=True, exist_ok=True)
        platforms = [f"--platform={t}" for t in utils.platform_tags(arch, node["glibc"])]
        with step(f"pip download {requirements.name} for Python {node['python']} ({suite}) "
                  f"into {target}"):
            subprocess.run(
                [
                    sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
                    f"--python-version={node['python']}", *platforms,
                    "--dest", str(target), "-r", str(requirements),
                ],
                check=True,
            )
        done.write_text("")
    return root


def node_wheels(suite: str = "bookworm", requirements: Path = NODE_REQUIREMENTS) -> Path:
    """The wheelhouse's directory for the machines of `suite` (their Python, this CPU)."""
    root = ensure_wheelhouse(requirements, suites=(suite,))
    return root / _wheelhouse_utils().tag_dir(NODE_OS[suite]["python"], platform.machine())
