"""Where one run's outputs go: straight into a local directory, or shipped to storage.

``LocalOutputs`` is the fast path: the run writes into its own directory and the final
files are written in place. ``ShippedOutputs`` stages stdout, stderr and results on local
disk, ships the logs as chunks while the run runs, and at the end uploads results, then
``events``, then ``status_code``, so its presence means everything else is there.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Protocol

import anyio
import anyio.to_thread

from saturn_async.exceptions import StorageError
from saturn_async.logs.shipper import ship_log
from saturn_async.storage import collect, local
from saturn_async.storage.base import Sink
from saturn_async.storage.layout import RESULTS, Event, Layout
from saturn_async.storage.ledger import LedgerWriter
from saturn_async.storage.transfer import upload_directory


class RunOutputs(Protocol):
    results_dir: str
    directory: RunDirectory
    """The directory the run writes into (its own, or its staging directory)."""

    def prepare(self) -> tuple[int, int]:
        """Create what the run writes into (before each attempt); returns its stdout and
        stderr opened for writing (the same fd twice when they share a file), which the
        caller closes."""

    def shipping(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Ship the logs while the body of this context runs, and what is left at its end."""

    async def rotate(self, attempt: int) -> None:
        """Keep a failed attempt's logs as ``stdout.N``/``stderr.N`` before a retry."""

    def stdout_size(self) -> int:
        """Bytes the attempt that just ended wrote to stdout (0 when unknown)."""

    async def drop_lost_chunks(self, attempts: int) -> None:
        """Before a rerun's first attempt (its worker died): remove the log chunks that a
        dead incarnation of the run shipped, which the new chunks would not all replace:
        of its current log and of the ``attempts - 1`` it could have rotated. Local logs
        need nothing: opening or rotating one replaces it whole."""

    async def finish(self, events: list[Event], status_code: int) -> int:
        """Save the results and record the outcome, ``status_code`` last; returns the
        status recorded (RESULTS_NOT_SAVED when the run exited 0 but some of its results
        could not be saved; events name them). Raises OSError or StorageError."""

    def close(self) -> None:
        """Let go of the run's directory (``finish`` does; for a run abandoned before)."""


class RunDirectory:
    """A run's directory, opened below a directory saturn holds without following links,
    and kept open while the run is in flight, so that everything saturn writes for the
    run lands in that directory even if a path to it is replaced meanwhile."""

    def __init__(self, open_parent: Callable[[], int], relative: str, mode: int) -> None:
        """``open_parent()`` returns an fd to walk ``relative`` from (closed afterwards)."""
        self._open_parent = open_parent
        self._relative = relative
        self._mode = mode
        self.fd: int | None = None

    def open(self) -> int:
        """The directory's fd (created and opened on first use). Raises OSError."""
        if self.fd is None:
            parent = self._open_parent()
            try:
                self.fd = local.open_below(parent, self._relative, self._mode)
            finally:
                os.close(parent)
        return self.fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def size_of(self, name: str) -> int:
        """The size of file ``name`` in the directory while it is open, else 0."""
        if self.fd is None:
            return 0
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_size
        except OSError:
            return 0


class LocalOutputs:
    def __init__(self, root: str, run_dir: str, results_dir: str, layout: Layout) -> None:
        """``run_dir`` lies strictly inside ``root``, the batch's output root."""
        self.run_dir = run_dir
        self.results_dir = results_dir
        self.layout = layout
        self.directory = RunDirectory(
            partial(local.open_directory, root), run_dir[len(root) :], 0o777
        )
        self.created: collect.Identity | None = None
        """The identity of the results directory saturn made elsewhere (None: default)."""

    def prepare(self) -> tuple[int, int]:
        fd = self.directory.open()
        self.created = _make_results_dir(self.results_dir, self.run_dir, fd, 0o777)
        return local.open_logs(fd, self.layout.stdout, self.layout.stderr)

    @contextlib.asynccontextmanager
    async def shipping(self) -> AsyncIterator[None]:
        yield

    async def drop_lost_chunks(self, attempts: int) -> None:
        return None

    async def rotate(self, attempt: int) -> None:
        try:
            fd = self.directory.open()
        except OSError:
            return  # nothing of ours to keep; the next start fails and says why
        await anyio.to_thread.run_sync(local.rotate_logs, fd, attempt, self.layout.logs)

    async def finish(self, events: list[Event], status_code: int) -> int:
        try:
            fd = self.directory.open()
            if self.created is None:  # in place: one rmdir, inline
                report = collect.collect_results(self.results_dir, fd, None)
            else:
                report = await anyio.to_thread.run_sync(
                    collect.collect_results, self.results_dir, fd, self.created
                )
            events = [*events, *report.events(None if report.complete else self.results_dir)]
            status_code = report.status(status_code)
            local.write_final(fd, events, status_code, self.layout)
        finally:
            self.directory.close()
        return status_code

    def close(self) -> None:
        self.directory.close()

    def stdout_size(self) -> int:
        return self.directory.size_of(self.layout.stdout)


def _make_results_dir(
    results_dir: str, run_dir: str, dir_fd: int, mode: int
) -> collect.Identity | None:
    """The default results directory is made in the run's directory (returns None); one
    the run file names elsewhere is the user's path (returns its identity, so that only
    that directory is collected and removed)."""
    if results_dir == f"{run_dir}/{RESULTS}":
        local.make_directory(RESULTS, dir_fd, mode)
        return None
    os.makedirs(results_dir, exist_ok=True)
    return collect.identity_of(results_dir)


class ShippedOutputs:
    def __init__(
        self,
        storage: Sink,
        location: str,
        staging: tuple[str, int],
        results_dir: str | None,
        chunk_seconds: float,
        ledger: LedgerWriter,
        root: str,
        layout: Layout,
    ) -> None:
        """``staging`` is the staging directory and an fd of it (checked to be ours)."""
        self.storage = storage
        self.location = location
        self.layout = layout
        staging_root, staging_fd = staging
        name = hashlib.sha1(location.encode()).hexdigest()[:24]
        self.staging = os.path.join(staging_root, name)
        self.directory = RunDirectory(partial(os.dup, staging_fd), name, 0o700)
        self.results_dir = results_dir or f"{self.staging}/{RESULTS}"
        self.chunk_seconds = chunk_seconds
        self.ledger = ledger
        self.root = root
        self.shipping_failed: StorageError | None = None

    def prepare(self) -> tuple[int, int]:
        fd = self.directory.open()
        _make_results_dir(self.results_dir, self.staging, fd, 0o700)
        return local.open_logs(fd, self.layout.stdout, self.layout.stderr)

    @contextlib.asynccontextmanager
    async def shipping(self) -> AsyncIterator[None]:
        done = anyio.Event()
        async with anyio.create_task_group() as tg:
            for name in self.layout.logs:
                tg.start_soon(self._ship, f"{self.staging}/{name}", f"{self.location}/{name}", done)
            try:
                yield
            finally:
                done.set()

    async def _ship(self, path: str, target: str, done: anyio.Event) -> None:
        """Ship one log; if storage stays away past its deadline, keep the staged copy."""
        try:
            await ship_log(self.storage, path, target, self.chunk_seconds, done)
        except StorageError as exc:
            self.shipping_failed = exc

    async def drop_lost_chunks(self, attempts: int) -> None:
        for name in self.layout.logs:
            for suffix in ["", *(f".{n}" for n in range(1, attempts))]:
                await self.storage.delete_below(f"{self.location}/{name}{suffix}")

    async def rotate(self, attempt: int) -> None:
        for name in self.layout.logs:
            await self.storage.move_below(
                f"{self.location}/{name}", f"{self.location}/{name}.{attempt}"
            )

    async def finish(self, events: list[Event], status_code: int) -> int:
        try:
            if self.shipping_failed is not None:
                raise self.shipping_failed
            report = await upload_directory(
                self.storage, self.results_dir, f"{self.location}/{RESULTS}"
            )
            events = [*events, *report.events(None if report.complete else self.results_dir)]
            status_code = report.status(status_code)
            await self.storage.put_all(self.location, self.layout.final_writes(events, status_code))
        except StorageError as exc:
            # Keep the outcome beside what is left of the logs (the chunks not shipped).
            where = self.staging
            if not self.results_dir.startswith(f"{self.staging}/"):
                where += f" (results in {self.results_dir})"
            kept = f"the outcome and the logs not shipped are kept in {where}"
            try:
                await anyio.to_thread.run_sync(
                    local.write_final, self.directory.open(), events, status_code, self.layout
                )
            except OSError as local_exc:
                kept = (
                    f"the logs not shipped are kept in {where}; "
                    f"the outcome could not be written there ({local_exc.strerror})"
                )
            raise StorageError(exc.location, exc.operation, f"{exc.reason}; {kept}") from exc
        finally:
            self.directory.close()
        self.ledger.record(self.root, self.location, status_code)
        await anyio.to_thread.run_sync(
            _remove_staging, self.staging, self.results_dir, report.complete
        )
        return status_code

    def close(self) -> None:
        self.directory.close()

    def stdout_size(self) -> int:
        return self.directory.size_of(self.layout.stdout)


def _remove_staging(staging: str, results_dir: str, with_results: bool) -> None:
    """Remove the staging directory and, ``with_results``, the results directory; else
    what was not saved stays where the run wrote it (its events say where)."""
    if with_results:
        _remove_directory(results_dir)
    elif results_dir.startswith(f"{staging}/"):
        with contextlib.suppress(OSError), os.scandir(staging) as entries:
            for entry in entries:
                if entry.path == results_dir:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    _remove_directory(entry.path)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
        return
    _remove_directory(staging)


def _remove_directory(path: str) -> None:
    """``shutil.rmtree(path)`` when ``path`` is a directory, not a link to one; anything
    else a run left in its place (a FIFO, say) is left alone: rmtree would open it, and
    opening a FIFO waits for a writer forever."""
    with contextlib.suppress(OSError):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path, ignore_errors=True)
