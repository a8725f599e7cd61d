"""Free-space checks: the daemon starts no run while a directory it writes is full."""

from __future__ import annotations

import errno
import os

from saturn_async.exceptions import StorageError

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def free_bytes(path: str) -> int:
    """Bytes available to this user on the filesystem holding ``path`` (or its parent)."""
    while True:
        try:
            st = os.statvfs(path)
        except FileNotFoundError:
            parent = os.path.dirname(path)
            if parent == path:
                raise
            path = parent
            continue
        return st.f_bavail * st.f_frsize


def is_disk_full(error: BaseException | None) -> bool:
    if isinstance(error, StorageError):
        error = error.__cause__
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS
