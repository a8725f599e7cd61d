"""Run outputs on a local filesystem: small blocking helpers (see architecture.md)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterable

import anyio.to_thread

from saturn_async.exceptions import InputError, NotRegularFile, StorageError
from saturn_async.storage.base import Storage, StoredObject
from saturn_async.storage.layout import (
    ERROR,
    STATUS,
    STATUS_CODE,
    Event,
    Layout,
    parse_status,
)
from saturn_async.storage.results_walk import (
    DIRECTORY_FLAGS,
    open_regular,
)

# A temporary is always a new file: never a link or a file someone planted under its name.
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


def write_atomically(
    path: str, data: bytes, mode: int = 0o644, *, dir_fd: int | None = None
) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file, or all of the new one
    (created with ``mode``, less the umask).

    With ``dir_fd``, ``path`` is a name in that directory.
    """

    _replace_atomically(path, lambda fd: write_all(fd, data), dir_fd, mode)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less at once)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _replace_atomically(
    path: str, fill: Callable[[int], object], dir_fd: int | None, mode: int = 0o644
) -> None:
    """``fill`` a new temporary file next to ``path``, then rename it over ``path``.

    The temporary has an unpredictable name and is created with O_EXCL and O_NOFOLLOW,
    so nothing planted under a temporary name is followed or overwritten (on a clash
    another name is drawn). It is removed if anything fails.
    """
    while True:
        tmp = f"{path}.tmp-{secrets.token_hex(8)}"
        try:
            fd = os.open(tmp, _TMP_FLAGS, mode, dir_fd=dir_fd)
        except FileExistsError:
            continue
        break
    try:
        try:
            fill(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def open_directory(path: str) -> int:
    """Open the directory ``path`` (the user's own path, links in it followed), creating
    it if missing; returns its fd."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        os.makedirs(path, exist_ok=True)
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def open_below(dir_fd: int, relative: str, mode: int = 0o777) -> int:
    """Create and open the directory ``relative`` below ``dir_fd``, one component at a time,
    never following a link: a component that is a link or not a directory raises OSError
    (a sibling run that replaced it cannot redirect what is written there).

    Returns the fd of the last component (the caller closes it).
    """
    fd = dir_fd
    walked = ""
    try:
        for name in relative.strip("/").split("/"):
            walked = f"{walked}/{name}" if walked else name
            make_directory(name, fd, mode)
            try:
                child = os.open(name, DIRECTORY_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise _not_followed(exc, name, fd, walked) from exc
            if fd != dir_fd:
                os.close(fd)
            fd = child
    except BaseException:
        if fd != dir_fd:
            os.close(fd)
        raise
    return fd


def _not_followed(exc: OSError, name: str, dir_fd: int | None, path: str) -> OSError:
    """``exc`` from opening ``name`` as a directory without following it, reworded when
    it was a link or not a directory (O_DIRECTORY with O_NOFOLLOW answers ENOTDIR for
    both)."""
    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
        return exc
    try:
        is_link = stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return exc
    if is_link:
        return OSError(errno.ELOOP, "is a symbolic link, which saturn does not follow", path)
    return OSError(errno.ENOTDIR, "is not a directory", path)


def open_logs(dir_fd: int, stdout: str, stderr: str) -> tuple[int, int]:
    """Open (create or truncate) a run's log files in ``dir_fd``, not following links.

    One name for both gives one fd twice: writes to both streams interleave in order.
    The fds are above 2, so handing them to a child as 1 and 2 cannot clobber one.
    """
    out = _above_stdio(os.open(stdout, _LOG_FLAGS, 0o644, dir_fd=dir_fd))
    if stderr == stdout:
        return out, out
    try:
        return out, _above_stdio(os.open(stderr, _LOG_FLAGS, 0o644, dir_fd=dir_fd))
    except BaseException:
        os.close(out)
        raise


def _above_stdio(fd: int) -> int:
    """``fd``, or a copy of it above 2 when this process had closed its stdio."""
    if fd > 2:
        return fd
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        os.close(fd)


def make_directory(name: str, dir_fd: int, mode: int = 0o777) -> None:
    """``mkdir`` in ``dir_fd``; an existing entry of that name is left as it is."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, mode, dir_fd=dir_fd)


def shared_with_nobody(root: str, relative: str) -> bool:
    """Whether each directory from ``root`` down to ``root/relative`` is ours and no one
    else may write to it, so only we put or replace what is in it (links not followed)."""
    path = root
    for part in relative.split("/"):
        path = f"{path}/{part}"
        try:
            info = os.lstat(path)
        except OSError:
            return False
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            return False
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
    return True


def open_private_directory(path: str) -> int:
    """Create ``path`` 0700, or open it if it is a directory of ours that only we can
    use; returns its fd. Anything else (a link, another user's directory, group or
    other access) is refused with InputError, since whoever controls it could read
    what is staged there or plant links in it."""
    try:
        os.makedirs(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        reason = f"cannot create it as a staging directory: {exc.strerror}"
        raise InputError(reason, source=path) from exc
    try:
        fd = os.open(path, DIRECTORY_FLAGS)
    except OSError as exc:
        reason = _not_followed(exc, path, None, path).strerror or str(exc)
        raise InputError(f"{reason}; refusing it as a staging directory", source=path) from exc
    info = os.fstat(fd)
    problem = None
    if info.st_uid != os.getuid():
        problem = f"is owned by uid {info.st_uid}, not by this user (uid {os.getuid()})"
    elif info.st_mode & 0o077:
        problem = f"has mode {stat.S_IMODE(info.st_mode):04o}; group and others must have no access"
    if problem is not None:
        os.close(fd)
        raise InputError(f"{problem}; refusing it as a staging directory", source=path)
    return fd


def read_range(path: str, start: int, length: int) -> bytes:
    """Up to ``length`` bytes of the regular file ``path`` from offset ``start``.

    NotRegularFile for a FIFO, a link or a device a run left there: never waited on.
    """
    fd, _size = open_regular(path)
    try:
        return os.pread(fd, length, start)
    finally:
        os.close(fd)


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
    """The first 64 bytes of the regular file ``path``, or None (see read_regular)."""
    try:
        return read_regular(path, 64)
    except OSError:
        return None


def read_regular(path: str, limit: int = -1) -> bytes:
    """Up to ``limit`` bytes (all without it) of the regular file ``path``. A FIFO, a
    link or a device a run left in its place raises NotRegularFile, never opened for
    reading, so never waited on."""
    fd, size = open_regular(path)
    try:
        return os.pread(fd, size if limit < 0 else limit, 0)
    finally:
        os.close(fd)


def rotate_logs(dir_fd: int, attempt: int, names: tuple[str, ...]) -> None:
    """Keep the logs of a failed attempt as ``stdout.N``/``stderr.N`` before a retry."""
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.replace(name, f"{name}.{attempt}", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def write_final(dir_fd: int, events: list[Event], status_code: int, layout: Layout) -> None:
    """Record the outcome in the run's directory ``dir_fd``, the finish marker last: its
    presence means all is written."""
    for name, data in layout.final_writes(events, status_code):
        if data is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)
        else:
            write_atomically(name, data, dir_fd=dir_fd)


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
    put_file_in(None, location, path)


def put_file_in(dir_fd: int | None, location: str, path: str) -> None:
    """Copy the regular file ``path`` to ``location`` (a name in ``dir_fd``, if given)."""
    source_fd, _size = open_regular(path)

    def fill(fd: int) -> None:
        with (
            open(source_fd, "rb", closefd=False) as source,
            open(fd, "wb", closefd=False) as target,
        ):
            shutil.copyfileobj(source, target)

    try:
        _replace_atomically(location, fill, dir_fd)
    finally:
        os.close(source_fd)


def _get(location: str) -> bytes | None:
    """The regular file at ``location``; None when there is none (or a directory). A link,
    a FIFO or a device there raises NotRegularFile, and is never read or waited on."""
    try:
        return read_regular(location)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except NotRegularFile:
        if os.path.isdir(location) and not os.path.islink(location):
            return None
        raise


def _list(prefix: str) -> list[StoredObject]:
    """The regular files below ``prefix``; links (to files or directories) are not objects."""
    found = []
    for directory, _dirs, files in os.walk(prefix):
        for name in files:
            path = os.path.join(directory, name)
            with contextlib.suppress(FileNotFoundError):
                info = os.lstat(path)
                if stat.S_ISREG(info.st_mode):
                    found.append(StoredObject(os.path.relpath(path, prefix), info.st_size))
    return sorted(found, key=lambda o: o.name)


def remove_below(root_fd: int, relative: str, names: Iterable[str]) -> None:
    """Unlink ``names`` in the directory ``relative`` below ``root_fd``, reached one
    component at a time without following a link; a component that is missing, a link
    or not a directory leaves everything as it is (what is behind a link is not saturn's)."""
    fd = root_fd
    try:
        for part in relative.split("/"):
            try:
                child = os.open(part, DIRECTORY_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    return
                raise
            if fd != root_fd:
                os.close(fd)
            fd = child
        for name in names:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(name, dir_fd=fd)
    finally:
        if fd != root_fd:
            os.close(fd)


def _delete(location: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(location)


def _move(source: str, target: str) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.replace(source, target)
