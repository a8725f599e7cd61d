"""Helpers of the hostile suites (tests/test_hostile_*.py): filesystem snapshots.

A case snapshots the directory around a run before and after it, and asserts that
nothing changed outside the paths the run owns: no file removed, moved, truncated,
rewritten or created there, and no mode changed.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

Entry = tuple[str, int, str]
"""(kind, mode bits, content digest or link target)."""


def snapshot(root: Path) -> dict[str, Entry]:
    """Every entry below ``root`` (links not followed), keyed by its path relative to it."""
    found: dict[str, Entry] = {}
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                entry: Entry = ("link", mode, os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                entry = ("dir", mode, "")
            elif stat.S_ISREG(info.st_mode):
                entry = ("file", mode, hashlib.sha256(Path(path).read_bytes()).hexdigest())
            else:
                entry = ("special", mode, "")
            found[os.path.relpath(path, root)] = entry
    return found


def changes_outside(
    before: dict[str, Entry], after: dict[str, Entry], owned: list[str]
) -> list[str]:
    """The paths that differ between two snapshots, except those under ``owned``
    (relative paths of the directories the run may write)."""

    def is_owned(path: str) -> bool:
        return any(path == o or path.startswith(o.rstrip("/") + "/") for o in owned)

    return sorted(
        path
        for path in before.keys() | after.keys()
        if before.get(path) != after.get(path) and not is_owned(path)
    )
