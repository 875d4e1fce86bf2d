"""The image the Molecule scenarios run on: the local pool's node image with Ray preinstalled.

The scenarios test the roles' set-up and Ray's behaviour, not pip: installing Ray from the
wheelhouse (tested by tests/integration/) would cost minutes per container. This builds, once
per node image and wheelhouse (the tag is a hash of both), the node image plus
/opt/ray/venv with requirements/node.txt (Ray, and the agent's packages the head adds) from the
host's wheelhouse, owned by the login user `ops`, recorded as a worker's install step records
it (the head's install step then finds its extra packages present), then `docker commit`s it.

    python extensions/molecule/ray_image.py      # prints the tag, building it if needed
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from tests.pool.images import ensure_images  # noqa: E402
from tests.pool.wheelhouse import NODE_REQUIREMENTS, node_wheels  # noqa: E402

REPO = "onprem-ray-molecule"
VENV = "/opt/ray/venv"
# What the roles' install step writes (roles/ray/vars/main.yml ray__requirements).
REQUIREMENTS = "ray[default]==2.60.0\n"


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"docker {' '.join(args[:3])}: {result.stderr.strip()}")
    return result


def ensure_image() -> str:
    node = ensure_images()
    wheelhouse = node_wheels()  # the node image's Python (Debian 12: 3.11)
    digest = hashlib.sha256(
        "\n".join([node, str(wheelhouse), NODE_REQUIREMENTS.read_text(), REQUIREMENTS]).encode()
    ).hexdigest()[:16]
    tag = f"{REPO}:{digest}"
    if _docker("image", "inspect", tag, check=False).returncode == 0:
        return tag
    name = f"onprem-ray-molecule-build-{digest}"
    _docker("rm", "--force", name, check=False)
    _docker("run", "--detach", "--name", name, node, "sleep", "infinity")
    try:
        _docker("cp", f"{wheelhouse}/.", f"{name}:/tmp/wheelhouse")
        _docker("cp", str(NODE_REQUIREMENTS), f"{name}:/tmp/wheelhouse.txt")
        script = (
            f"set -e; mkdir -p {VENV}; python3 -m venv {VENV}; "
            f"{VENV}/bin/pip install --quiet --disable-pip-version-check --no-index "
            f"--find-links /tmp/wheelhouse -r /tmp/wheelhouse.txt; "
            f"printf '%s' '{REQUIREMENTS}' > {VENV}/onprem-ray-requirements.txt; "
            f"chown -R ops:ops {VENV}; rm -rf /tmp/wheelhouse /root/.cache"
        )
        _docker("exec", name, "sh", "-c", script)
        _docker("commit", "--change", 'CMD ["/sbin/init"]', name, tag)
    finally:
        _docker("rm", "--force", name, check=False)
    return tag


if __name__ == "__main__":
    print(ensure_image())
