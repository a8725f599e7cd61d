"""Walking a run's results directory, and opening what it holds, without trusting it.

A run may leave anything in its results: links (dangling, or to ``/etc/passwd``), FIFOs,
sockets, devices, files that vanish or cannot be read, a million files. The one walker
here, :func:`walk_results`, is what local and S3 storage and the queue sink use: it never follows a
link, and yields regular files and directories as such and everything else as
``skipped`` (never opened) or ``failed`` (could not be listed) :class:`Entry`. Files are
opened with :func:`open_regular`: ``O_NOFOLLOW | O_NONBLOCK`` then ``fstat``, so a FIFO or
link swapped in after the walk is refused at once instead of blocking a thread.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Literal

from saturn_async.exceptions import NotRegularFile
from saturn_async.storage.layout import RESULTS, RESULTS_NOT_SAVED, Event, utcnow

MAX_REPORTED = 100
"""Entries named in a run's events per kind (skipped, failed); the rest are counted."""
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
LINK = "a symbolic link"
_KINDS = (
    (stat.S_ISLNK, LINK),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One thing found below the results directory; ``relative`` uses ``/`` separators."""

    relative: str
    kind: Literal["file", "dir", "skipped", "failed"]
    reason: str = ""
    """Why it is skipped (its kind) or failed (the OS error), else empty."""


@dataclass(slots=True)
class ResultsReport:
    """What saving a run's results left out, for its events and its status code."""

    skipped: list[Entry] = field(default_factory=list)
    failed: list[Entry] = field(default_factory=list)
    more_skipped: int = 0
    more_failed: int = 0

    def add(self, entry: Entry) -> None:
        """Note a ``skipped`` or ``failed`` entry (files and directories are not noted)."""
        if entry.kind == "skipped":
            if len(self.skipped) < MAX_REPORTED:
                self.skipped.append(entry)
            else:
                self.more_skipped += 1
        elif entry.kind == "failed":
            if len(self.failed) < MAX_REPORTED:
                self.failed.append(entry)
            else:
                self.more_failed += 1

    @property
    def complete(self) -> bool:
        """True when every regular file was saved (skipped entries do not count)."""
        return not self.failed

    def status(self, status_code: int) -> int:
        """The run's status: its own, or RESULTS_NOT_SAVED when it exited 0 but some of
        its results could not be saved."""
        return RESULTS_NOT_SAVED if status_code == 0 and self.failed else status_code

    def events(self, kept_in: str | None = None) -> list[Event]:
        """One ``skipped`` or ``not_saved`` event per entry (``path`` relative to the
        run's output path), then one counting the entries not named."""
        if not (self.skipped or self.failed):
            return []
        now = utcnow()
        found = [
            Event(
                type="skipped",
                utctimestamp=now,
                path=_shown(f"{RESULTS}/{e.relative}".rstrip("/")),
                error=_shown(e.reason),
            )
            for e in self.skipped
        ]
        if self.more_skipped:
            found.append(
                Event(type="skipped", utctimestamp=now, error=f"{self.more_skipped} more entries")
            )
        kept = f"; what was not saved is kept in {kept_in}" if kept_in else ""
        found.extend(
            Event(
                type="not_saved",
                utctimestamp=now,
                path=_shown(f"{RESULTS}/{e.relative}".rstrip("/")),
                error=_shown(e.reason + kept),
            )
            for e in self.failed
        )
        if self.more_failed:
            found.append(
                Event(type="not_saved", utctimestamp=now, error=f"{self.more_failed} more entries")
            )
        return found


def _shown(text: str) -> str:
    """``text`` as events can hold it: a name that is not UTF-8 gets escapes."""
    return text.encode(errors="backslashreplace").decode()


def kind_of(mode: int) -> str:
    """What a non-regular, non-directory ``st_mode`` is, in words."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def walk_results(directory: str) -> Generator[Entry, None, None]:
    """Every entry below ``directory``, depth first, parents before their contents.

    Each directory is opened with ``O_NOFOLLOW`` relative to its parent's descriptor, so
    a directory swapped for a link is not entered; links are reported, never followed.
    A directory that cannot be listed, or an entry that vanished, is a ``failed`` entry;
    ``directory`` itself being a link or something else is one ``skipped`` entry (``""``).
    Memory and descriptors are bounded by the depth, not the number of files.
    """
    stack: list[_Level] = []
    try:
        stack.append(_Level.open("", directory, None))
    except FileNotFoundError:
        return
    except OSError as exc:
        yield _refused(directory, "", exc)
        return
    try:
        while stack:
            level = stack[-1]
            try:
                entry = next(level.entries, None)
            except OSError as exc:
                level.close()
                stack.pop()
                yield Entry(level.relative, "failed", reason_of(exc))
                continue
            if entry is None:
                level.close()
                stack.pop()
                continue
            relative = f"{level.relative}/{entry.name}" if level.relative else entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    yield Entry(relative, "dir")
                    stack.append(_Level.open(relative, entry.name, level.fd))
                elif entry.is_file(follow_symlinks=False):
                    yield Entry(relative, "file")
                else:
                    yield Entry(
                        relative, "skipped", kind_of(entry.stat(follow_symlinks=False).st_mode)
                    )
            except OSError as exc:
                yield _refused(directory, relative, exc)
    finally:
        for level in stack:
            level.close()


@dataclass(slots=True)
class _Level:
    """One open directory of the walk: its descriptor and its entries."""

    relative: str
    fd: int
    entries: Iterator[os.DirEntry[str]]

    @classmethod
    def open(cls, relative: str, name: str, parent: int | None) -> _Level:
        fd = os.open(name, DIRECTORY_FLAGS, dir_fd=parent)
        try:
            return cls(relative, fd, os.scandir(fd))
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        close = getattr(self.entries, "close", None)
        if close is not None:
            close()
        os.close(self.fd)


def _refused(directory: str, relative: str, exc: OSError) -> Entry:
    """A directory that could not be opened: one replaced by a link, or by something
    else, is skipped (``O_DIRECTORY | O_NOFOLLOW`` refuses a link with ENOTDIR)."""
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        path = f"{directory}/{relative}" if relative else directory
        return Entry(relative, "skipped", LINK if os.path.islink(path) else "not a directory")
    return Entry(relative, "failed", reason_of(exc))


def reason_of(exc: OSError) -> str:
    """Why an entry could not be saved, from the OS error."""
    if isinstance(exc, FileNotFoundError):
        return "vanished while it was being saved"
    return exc.strerror or str(exc)


def open_regular(path: str) -> tuple[int, int]:
    """Open ``path`` for reading if it is a regular file: ``(fd, size)``; close ``fd``.

    Raises NotRegularFile for a link (``O_NOFOLLOW``), a FIFO, a socket or a device
    (opened with ``O_NONBLOCK``, so nothing waits on a writer), and OSError otherwise.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFile(errno.ELOOP, LINK, path) from exc
        raise
    try:
        info = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise NotRegularFile(errno.EINVAL, kind_of(info.st_mode), path)
    return fd, info.st_size


def read_at(fd: int, start: int, length: int) -> bytes:
    """Up to ``length`` bytes of the open file ``fd`` from offset ``start`` (short at EOF)."""
    parts = []
    while length > 0:
        data = os.pread(fd, length, start)
        if not data:
            break
        parts.append(data)
        start += len(data)
        length -= len(data)
    return b"".join(parts)
