"""Collecting a run's results into its local output directory (see architecture.md).

Everything is done relative to directory fds saturn opened: nothing is written through
a path, or moved or removed by a path, that a run can replace with a link.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat

from saturn_async.exceptions import NotRegularFile
from saturn_async.storage.layout import RESULTS
from saturn_async.storage.local import open_below, put_file_in
from saturn_async.storage.results_walk import LINK, Entry, ResultsReport, reason_of, walk_results

Identity = tuple[int, int]
"""A directory's ``(st_dev, st_ino)``, recorded when saturn creates it."""

REPLACED = "was replaced after saturn created it (not saturn's directory); left as it is"


def identity_of(path: str) -> Identity:
    """``(st_dev, st_ino)`` of ``path`` itself (a link is not followed)."""
    info = os.lstat(path)
    return info.st_dev, info.st_ino


def collect_results(local_results_dir: str, run_fd: int, created: Identity | None) -> ResultsReport:
    """Bring a run's results into ``results`` in its directory ``run_fd``; drop that
    directory if it is empty.

    ``local_results_dir``, when ``created`` is given, is the directory saturn created for
    the run, with that identity (``spec.results_dirs`` refuses one that exists before it
    starts). If its path no longer names that very directory (a link, a FIFO, a parent
    swapped), it is left alone and reported as not saved. Else it is renamed into place
    when it can be (the same filesystem, no ``results/`` yet): everything in it moves as
    it is, nothing is opened. Otherwise it is copied over the walk into ``results``
    opened below ``run_fd`` (no link followed): regular files and directories are
    copied, links copied as links, special files skipped, and nothing in ``results``
    that is a link is written through; it is removed only once all of it was copied.
    """
    report = ResultsReport()
    if created is not None:
        parent_path, name = os.path.split(local_results_dir.rstrip("/"))
        try:
            parent = os.open(parent_path or "/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            report.add(Entry("", "failed", reason_of(exc)))
            return report
        try:
            _collect_from(parent, name, run_fd, created, report)
        finally:
            os.close(parent)
    with contextlib.suppress(OSError):
        os.rmdir(RESULTS, dir_fd=run_fd)
    return report


def _collect_from(
    parent: int, name: str, run_fd: int, created: Identity, report: ResultsReport
) -> None:
    """Collect ``name`` in ``parent`` if it still is the directory ``created``."""
    if not _is_created(parent, name, created, report):
        return
    try:
        os.rename(name, RESULTS, src_dir_fd=parent, dst_dir_fd=run_fd)
        return  # onto nothing, or an empty directory
    except OSError:
        pass
    _copy_results(f"/proc/self/fd/{parent}/{name}", run_fd, report)
    if report.complete and _is_created(parent, name, created, report):
        shutil.rmtree(name, ignore_errors=True, dir_fd=parent)


def _is_created(parent: int, name: str, created: Identity, report: ResultsReport) -> bool:
    """True when ``name`` in ``parent`` is the directory ``created``; when it is there
    but something else, that is reported as not saved."""
    try:
        info = os.lstat(name, dir_fd=parent)
    except FileNotFoundError:
        return False  # the run removed it: no results
    except OSError as exc:
        report.add(Entry("", "failed", reason_of(exc)))
        return False
    if stat.S_ISDIR(info.st_mode) and (info.st_dev, info.st_ino) == created:
        return True
    report.add(Entry("", "failed", REPLACED))
    return False


def _copy_results(source: str, run_fd: int, report: ResultsReport) -> None:
    try:
        target = open_below(run_fd, RESULTS)
    except OSError as exc:
        report.add(Entry("", "failed", reason_of(exc)))
        return
    try:
        for entry in walk_results(source):
            if not entry.relative:  # the directory itself is not one
                report.add(entry)
                continue
            try:
                _copy_entry(entry, f"{source}/{entry.relative}", target, report)
            except NotRegularFile as exc:
                reason = exc.strerror or "not a regular file"
                report.add(Entry(entry.relative, "skipped", reason))
            except OSError as exc:
                report.add(Entry(entry.relative, "failed", reason_of(exc)))
    finally:
        os.close(target)


def _copy_entry(entry: Entry, src: str, target: int, report: ResultsReport) -> None:
    """Copy one walked entry to ``entry.relative`` below ``target``, every directory
    opened without following a link."""
    if entry.kind not in ("dir", "file") and entry.reason != LINK:
        report.add(entry)
        return
    head, name = os.path.split(entry.relative)
    if entry.kind == "dir":
        os.close(open_below(target, entry.relative))
        return
    parent = open_below(target, head) if head else os.dup(target)
    try:
        if entry.kind == "file":
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISLNK(os.lstat(name, dir_fd=parent).st_mode):
                    raise NotRegularFile(errno.ELOOP, f"{LINK} in the way", entry.relative)
            put_file_in(parent, name, src)
        else:  # a link, copied as one (one already there is replaced, not followed)
            link = os.readlink(src)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=parent)
            os.symlink(link, name, dir_fd=parent)
    finally:
        os.close(parent)
