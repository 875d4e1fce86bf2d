"""The Molecule scenarios of extensions/molecule/, each run as `molecule test -s <name>`.

They run on the local pool's node image with Ray preinstalled (extensions/molecule/ray_image.py
builds it once per node image and wheelhouse), on their own Docker networks
(10.213.251-255.0/24, outside the range the pool tool picks from).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.pool.wheelhouse import REPO_ROOT, ensure_wheelhouse

pytestmark = pytest.mark.molecule

SCENARIOS = ["default", "cluster", "retire", "restart", "check"]


@pytest.fixture(scope="module")
def molecule_env() -> dict[str, str]:
    image = subprocess.run([sys.executable, str(REPO_ROOT / "extensions/molecule/ray_image.py")],
                           capture_output=True, text=True, check=True).stdout.strip()
    return {**os.environ, "ONPREM_RAY_MOLECULE_IMAGE": image,
            "ONPREM_RAY_WHEELHOUSE": str(ensure_wheelhouse()),
            "ANSIBLE_NOCOLOR": "1", "NO_COLOR": "1"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario: str, molecule_env: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, "-m", "molecule", "test", "-s", scenario],
                            cwd=REPO_ROOT, env=molecule_env, capture_output=True, text=True,
                            timeout=1800, check=False)
    assert result.returncode == 0, (f"molecule test -s {scenario} failed:\n"
                                    f"{result.stdout[-8000:]}\n{result.stderr[-8000:]}")
