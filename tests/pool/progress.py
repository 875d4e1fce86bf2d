"""Progress lines for long work, so a person watching knows what is happening and for how long."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def step(what: str) -> Iterator[None]:
    print(f"[pool] {what} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        yield
    except BaseException:
        print(f"[pool] {what}: failed after {time.monotonic() - started:.1f}s",
              file=sys.stderr, flush=True)
        raise
    print(f"[pool] {what}: done in {time.monotonic() - started:.1f}s",
          file=sys.stderr, flush=True)
