"""Download the nodes' Python packages once on the host: the containers cannot reach an index."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from tests.pool.progress import step

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_REQUIREMENTS = REPO_ROOT / "requirements" / "node.txt"


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "onprem-ray"
    return Path(os.environ.get("ONPREM_RAY_CACHE", default))


def ensure_wheelhouse(requirements: Path = NODE_REQUIREMENTS) -> Path:
    """Return a directory of wheels for `requirements`, downloading it the first time."""
    key = hashlib.sha256(
        requirements.read_bytes() + f"{sys.version_info[:2]}".encode()
    ).hexdigest()[:16]
    target = cache_root() / "wheelhouse" / key
    done = target / ".complete"
    if done.exists():
        print(f"[pool] wheelhouse {target} is cached", file=sys.stderr, flush=True)
        return target
    target.mkdir(parents=True, exist_ok=True)
    with step(f"pip download {requirements.name} into {target}"):
        subprocess.run(
            [
                sys.executable, "-m", "pip", "download", "--quiet",
                "--only-binary=:all:", "--dest", str(target), "-r", str(requirements),
            ],
            check=True,
        )
    done.write_text("")
    return target
