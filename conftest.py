"""Hypothesis settings for every test: a profile per use, and the example database kept
between runs under .cache/hypothesis, so that a failing example found once is tried first on
every later run (CI keeps it with the rest of .cache).

HYPOTHESIS_PROFILE=ci (also chosen when CI is set) is derandomized, so that a run is repeatable
and each property's counted sides are the same every time, and prints the blob to reproduce a
failure; `dev` (the default elsewhere) draws new examples each run and keeps the database.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

DATABASE = DirectoryBasedExampleDatabase(Path(__file__).resolve().parent / ".cache" / "hypothesis")
_COMMON = {"database": DATABASE, "deadline": None,
           "suppress_health_check": [HealthCheck.too_slow]}

settings.register_profile("dev", max_examples=200, **_COMMON)
settings.register_profile("ci", max_examples=200, print_blob=True, derandomize=True,
                          **{**_COMMON, "database": None})
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI")
                                                                 else "dev"))
