"""Makes the agent's package, and the builders next to the tests, importable when the tests
run from the repository root (`python -m pytest agent/tests`) without installing anything."""

from __future__ import annotations

import os
import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
AGENT_DIR = TESTS_DIR.parent

for directory in (TESTS_DIR, AGENT_DIR):
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))

# Hypothesis profiles: "ci" (the default: derandomized, so a run is repeatable, with enough
# examples for each property to reach both of its sides) and "dev" (fewer examples, random).
# HYPOTHESIS_PROFILE=dev picks the other.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("dev", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
