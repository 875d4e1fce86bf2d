"""Makes the agent's package, and the builders next to the tests, importable when the tests
run from the repository root (`python -m pytest agent/tests`) without installing anything."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
AGENT_DIR = TESTS_DIR.parent

for directory in (TESTS_DIR, AGENT_DIR):
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))

# Hypothesis profiles: the repository's conftest.py.
