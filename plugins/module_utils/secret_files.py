# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Writing files that hold secrets: owner and mode set before the content is visible."""

from __future__ import annotations

import os
import tempfile


def write_atomic(path, data, uid, gid, mode):
    """Write `data` to `path` through a temporary file (created 0600, given its owner and mode)
    renamed over it: readers see the old file or the new one, never a partial or open one."""
    fd, tmp = tempfile.mkstemp(prefix=".onprem-ray.", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chown(tmp, uid, gid)
        os.chmod(tmp, 0o644 if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
