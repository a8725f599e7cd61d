"""Run outputs on a local filesystem: small blocking helpers (see architecture.md)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable

import anyio.to_thread

from saturn_async.exceptions import NotRegularFile, StorageError
from saturn_async.storage.base import Storage, StoredObject
from saturn_async.storage.layout import (
    ERROR,
    RESULTS,
    STATUS,
    STATUS_CODE,
    Event,
    Layout,
    parse_status,
)
from saturn_async.storage.results_walk import (
    LINK,
    Entry,
    ResultsReport,
    open_regular,
    reason_of,
    walk_results,
)


def write_atomically(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file, or all of the new one
    (created with ``mode``, less the umask)."""

    def write(tmp: str) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    _replace_atomically(path, write)


def _replace_atomically(path: str, write: Callable[[str], object]) -> None:
    """``write`` a temporary file next to ``path``, then rename it over ``path``.

    The temporary file is removed if anything fails.
    """
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_range(path: str, start: int, length: int) -> bytes:
    """Up to ``length`` bytes of the file ``path`` from offset ``start``."""
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(length)


def read_status_code(run_dir: str) -> int | None:
    """The run's recorded exit status in either layout, or None when it has not finished.

    One open in the common case (``batch`` layout); a garbled file counts as no status.
    """
    status_code = _read_small(os.path.join(run_dir, STATUS_CODE))
    if status_code is not None:
        return parse_status(status_code, None, None)
    status = _read_small(os.path.join(run_dir, STATUS))
    if status is None:
        return None
    return parse_status(None, status, _read_small(os.path.join(run_dir, ERROR)))


def _read_small(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(64)
    except OSError:
        return None


def rotate_logs(run_dir: str, attempt: int, names: tuple[str, ...]) -> None:
    """Keep the logs of a failed attempt as ``stdout.N``/``stderr.N`` before a retry."""
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.replace(os.path.join(run_dir, name), os.path.join(run_dir, f"{name}.{attempt}"))


def collect_results(local_results_dir: str, run_dir: str) -> ResultsReport:
    """Bring a run's results into ``run_dir/results``; drop that directory if it is empty.

    ``local_results_dir``, when not ``run_dir/results``, is a directory saturn created for
    this run (``spec.results_dirs`` refuses one that exists before it starts). It is
    renamed into place when it can be (the same filesystem, no ``results/`` yet):
    everything in it moves as it is, nothing is opened. Otherwise it is copied over the
    walk: regular files and directories are copied, links copied as links (never
    followed), special files skipped; it is removed only once all of it was copied.
    """
    report = ResultsReport()
    target = f"{run_dir}/{RESULTS}"
    if local_results_dir.rstrip("/") != target:
        try:
            os.rename(local_results_dir, target)  # onto nothing, or an empty directory
        except FileNotFoundError:
            pass  # the run removed it: no results
        except OSError:
            _copy_results(local_results_dir, target, report)
            if report.complete:
                shutil.rmtree(local_results_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.rmdir(target)
    return report


def _copy_results(source: str, target: str, report: ResultsReport) -> None:
    for entry in walk_results(source):
        if not entry.relative:  # the directory itself is not one
            report.add(entry)
            continue
        src, dst = f"{source}/{entry.relative}", f"{target}/{entry.relative}"
        try:
            if entry.kind == "dir":
                os.makedirs(dst, exist_ok=True)
            elif entry.kind == "file":
                _put_file(dst, src)
            elif entry.reason == LINK:
                link = os.readlink(src)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(dst)
                os.symlink(link, dst)
            else:
                report.add(entry)
        except NotRegularFile as exc:
            report.add(Entry(entry.relative, "skipped", exc.strerror or "not a regular file"))
        except OSError as exc:
            report.add(Entry(entry.relative, "failed", reason_of(exc)))


def make_run_dirs(run_dir: str, results_dir: str) -> None:
    """Create the run's directory and its results directory (two mkdirs in the common case)."""
    for path in (run_dir, results_dir):
        try:
            os.mkdir(path)
        except FileExistsError:
            pass
        except FileNotFoundError:
            os.makedirs(path, exist_ok=True)


def write_final(run_dir: str, events: list[Event], status_code: int, layout: Layout) -> None:
    """Record the outcome, the finish marker last: its presence means all is written."""
    for name, data in layout.final_writes(events, status_code):
        if data is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{run_dir}/{name}")
        else:
            write_atomically(f"{run_dir}/{name}", data)


class LocalStorage(Storage):
    """The storage interface over the local filesystem; blocking calls run in threads."""

    async def check(self, location: str) -> None:
        await anyio.to_thread.run_sync(_check_writable, location)

    async def put(self, location: str, data: bytes) -> None:
        await anyio.to_thread.run_sync(_put, location, data)

    async def put_file(self, location: str, path: str) -> None:
        await anyio.to_thread.run_sync(_put_file, location, path)

    async def get(self, location: str) -> bytes | None:
        return await anyio.to_thread.run_sync(_get, location)

    async def list(self, prefix: str) -> list[StoredObject]:
        return await anyio.to_thread.run_sync(_list, prefix)

    async def move(self, source: str, target: str) -> None:
        await anyio.to_thread.run_sync(_move, source, target)

    async def delete(self, location: str) -> None:
        await anyio.to_thread.run_sync(_delete, location)


def _check_writable(location: str) -> None:
    try:
        os.makedirs(location, exist_ok=True)
    except OSError as exc:
        raise StorageError(location, "mkdir", exc.strerror or str(exc)) from exc
    if not os.access(location, os.W_OK | os.X_OK):
        raise StorageError(location, "write", "permission denied")


def _put(location: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(location), exist_ok=True)
    write_atomically(location, data)


def _put_file(location: str, path: str) -> None:
    os.makedirs(os.path.dirname(location), exist_ok=True)
    fd, _size = open_regular(path)
    try:
        _replace_atomically(location, lambda tmp: _copy_from(fd, tmp))
    finally:
        os.close(fd)


def _copy_from(fd: int, path: str) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with open(fd, "rb", closefd=False) as source, open(os.open(path, flags, 0o644), "wb") as target:
        shutil.copyfileobj(source, target)


def _get(location: str) -> bytes | None:
    try:
        with open(location, "rb") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _list(prefix: str) -> list[StoredObject]:
    found = []
    for directory, _dirs, files in os.walk(prefix):
        for name in files:
            path = os.path.join(directory, name)
            with contextlib.suppress(FileNotFoundError):
                found.append(StoredObject(os.path.relpath(path, prefix), os.stat(path).st_size))
    return sorted(found, key=lambda o: o.name)


def _delete(location: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(location)


def _move(source: str, target: str) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.replace(source, target)
