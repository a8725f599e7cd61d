"""What ``split`` may replace and remove in its output directory.

``split`` records the names of the files it writes in ``OUTDIR/.saturn-split`` (a JSON
list). A later split of the same directory may replace or remove those, and nothing else:
any other existing file it would write is refused (unless ``--overwrite``), its own batch
files beyond the new last one and its own ``--sync`` tarballs not written again are
removed, other files are left alone, and the job file being split is never touched.
Everything is checked before the first file is written.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from saturn_async.exceptions import InputError
from saturn_async.spec.paths import is_remote
from saturn_async.storage.local import write_atomically

MANIFEST = ".saturn-split"
_BATCH_FILE = re.compile(r"^(\d+)\.json$")
_SYNC_TARBALL = re.compile(r"^sync-.+\.tar\.gz$")
_NAMES = msgspec.json.Decoder(list[str])


@dataclass(frozen=True)
class OutdirPlan:
    """The files a split will write, and the earlier ones of its own it will remove."""

    out: Path
    targets: frozenset[str]
    stale: frozenset[str]
    kept: frozenset[str]
    """Names recorded by an earlier split that stay on disk and stay ours."""

    def claim(self) -> None:
        """Record every name before writing, so an interrupted split can be redone."""
        self.out.mkdir(parents=True, exist_ok=True)
        self._record(self.targets | self.stale | self.kept)

    def finish(self) -> None:
        """Remove the stale batch files, then record what is ours now."""
        for name in self.stale:
            (self.out / name).unlink(missing_ok=True)
        self._record(self.targets | self.kept)

    def _record(self, names: frozenset[str]) -> None:
        record_names(self.out, names)


def record_names(out: Path, names: Iterable[str]) -> None:
    """Record ``names`` as the files of ``out`` that saturn wrote (the manifest)."""
    write_atomically(str(out / MANIFEST), msgspec.json.encode(sorted(names)))


def plan_outdir(
    out: Path, targets: set[str], job_path: str, batch_files: int, overwrite: bool
) -> OutdirPlan:
    """Check ``targets`` (names in ``out``) against what is there; raise InputError on
    the first that may not be replaced."""
    try:
        entries = {entry.name: entry for entry in os.scandir(out)}
    except FileNotFoundError:
        return OutdirPlan(out, frozenset(targets), frozenset(), frozenset())
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", source=str(out)) from exc
    ours = recorded_names(out) if MANIFEST in entries else set()
    # An s3:// job file cannot be one of OUTDIR's files.
    job = (-1, -1)
    if not is_remote(job_path):
        info = os.stat(job_path)
        job = info.st_dev, info.st_ino
    for name in sorted(targets & entries.keys()):
        entry = entries[name]
        info = entry.stat(follow_symlinks=False)
        path = str(out / name)
        if _identity(entry) == job:
            raise InputError("is the job file being split; choose another OUTDIR", source=path)
        if not stat.S_ISREG(info.st_mode) and not stat.S_ISLNK(info.st_mode):
            raise InputError("exists and is not a regular file", source=path)
        if name not in ours and not overwrite:
            raise InputError(
                "exists and was not written by saturn split; "
                "move it away or pass --overwrite to replace it",
                source=path,
            )
    present = {
        name
        for name in ours - targets
        if name in entries
        and _identity(entries[name]) != job
        # A directory put under a recorded name is not split's: neither removed nor kept.
        and not entries[name].is_dir(follow_symlinks=False)
    }
    # Batch files beyond the new last one, and tarballs of a --sync not given again.
    stale = {
        name
        for name in present
        if ((match := _BATCH_FILE.match(name)) and int(match.group(1)) >= batch_files)
        or _SYNC_TARBALL.match(name)
    }
    kept = present - stale
    return OutdirPlan(out, frozenset(targets), frozenset(stale), frozenset(kept))


def _identity(entry: os.DirEntry[str]) -> tuple[int, int]:
    info = entry.stat(follow_symlinks=False)
    return info.st_dev, info.st_ino


def recorded_names(out: Path) -> set[str]:
    """The names the manifest of ``out`` lists (it must exist)."""
    path = out / MANIFEST
    try:
        names = _NAMES.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError) as exc:
        raise InputError(f"unreadable split manifest: {exc}", source=str(path)) from exc
    if any(not name or "/" in name or name in (".", "..", MANIFEST) for name in names):
        raise InputError("split manifest names a file outside OUTDIR", source=str(path))
    return set(names)
