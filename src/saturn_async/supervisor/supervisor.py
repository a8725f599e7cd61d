"""The supervisor: ``nprocs`` slots shared by every run of every batch, and shutdown."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import anyio
import anyio.abc
import anyio.to_thread

from saturn_async.exceptions import StorageError
from saturn_async.linux import prompt_scheduling
from saturn_async.spec.models import Batch, Run
from saturn_async.spec.paths import is_remote
from saturn_async.storage import Storage, local, storage_for
from saturn_async.storage.layout import LAYOUTS, RESULTS, utcnow
from saturn_async.storage.ledger import LedgerWriter, read_ledger
from saturn_async.supervisor.finished import recorded_outcome
from saturn_async.supervisor.lease import MetOwners, RunLease
from saturn_async.supervisor.lifecycle import RunLifecycle
from saturn_async.supervisor.outputs import LocalOutputs, RunOutputs, ShippedOutputs
from saturn_async.supervisor.process import RunProcess, kill_after
from saturn_async.supervisor.progress import FailedRun, RunningRun, SweepProgress
from saturn_async.supervisor.shared_slots import SharedSlots
from saturn_async.supervisor.watchdog import ID_VARIABLE, Watchdog

T = TypeVar("T")
# Threads for blocking filesystem work; each slot uses at most one at a time.
_MAX_IO_THREADS = 16


def default_staging_dir() -> str:
    """Where runs with remote outputs write before shipping: ``$SATURN_STAGING_DIR``, else
    ``$TMPDIR/saturn_async-staging-UID``. It is used only if it is ours and 0700 (see
    :func:`saturn_async.storage.local.open_private_directory`)."""
    return os.environ.get("SATURN_STAGING_DIR") or os.path.join(
        tempfile.gettempdir(), f"saturn_async-staging-{os.getuid()}"
    )


@dataclass(frozen=True, slots=True)
class BatchSummary:
    succeeded: int
    failed: int
    skipped: int
    not_started: int
    stop_signal: int | None
    """The signal that interrupted the supervisor, if one did."""

    @property
    def exit_code(self) -> int:
        """0 all succeeded, 1 some failed, 128+N when interrupted by signal N."""
        if self.stop_signal is not None:
            return 128 + self.stop_signal
        return 1 if self.failed else 0


class Supervisor:
    """Runs batches with at most ``nprocs`` runs at a time.

    Slot ``rank`` (0..nprocs-1) is a task that takes the next run from one iterator over
    all batches, so no slot idles at a batch boundary while runs remain. Create it inside
    a running event loop (it makes anyio Events).
    """

    def __init__(
        self,
        nprocs: int,
        *,
        grace: float = 10.0,
        skip_completed: bool = False,
        wait_for_owner: bool = False,
        skip_finished: bool = False,
        report: Callable[[str], None] | None = None,
        log_chunk_seconds: float = 60.0,
        staging_dir: str | None = None,
        storage: Storage | None = None,
        shared_slots: SharedSlots | None = None,
        submitted: str | None = None,
    ) -> None:
        """``storage``, when given, receives every run's outputs, local paths included
        (they are then names the storage interprets: a queue to the client, say).
        ``shared_slots``, when given, must also be held by each run: slots shared with
        other supervisors in this process. ``submitted`` is the time of the runs'
        ``submitted`` event (default: now). A run whose lease another supervisor holds
        is skipped, or with ``wait_for_owner`` waited for (see supervisor/lease.py).
        ``skip_finished`` skips the runs that already have a final status of this sweep,
        whatever its code: set when an engine runs a batch again after its worker died
        (a run still owned, by a dying incarnation, is then waited for, never skipped)."""
        if nprocs < 1:
            raise ValueError("nprocs must be at least 1")
        self.nprocs = nprocs
        self.grace = grace
        self.skip_completed = skip_completed
        self.wait_for_owner = wait_for_owner or skip_finished
        self.met_owners = MetOwners()
        self.started_at = time.time()
        self.skip_finished = skip_finished
        self.log_chunk_seconds = log_chunk_seconds
        self.staging_dir = staging_dir or default_staging_dir()
        self._staging_fd: int | None = None
        self.storage: Storage | None = storage
        self._ship_everything = storage is not None
        self.shared_slots = shared_slots
        self.ledger: LedgerWriter | None = None
        self._ledger_statuses: dict[str, int] = {}
        self.report = report or (lambda message: print(message, file=sys.stderr))
        self.progress = SweepProgress(total=0)
        self.submitted = submitted or utcnow()
        self.stop_signal: int | None = None
        self._running: dict[int, RunProcess] = {}
        self._base_env = dict(os.environ)
        self._env_cache: dict[int, dict[str, str]] = {}
        self._io = anyio.CapacityLimiter(min(nprocs, _MAX_IO_THREADS))
        self.stop_requested = anyio.Event()
        self.forced = anyio.Event()
        self._roots: set[str] = set()
        self._stack: contextlib.AsyncExitStack | None = None
        self._background: anyio.abc.TaskGroup | None = None
        self.on_attempt_end: Callable[[RunLifecycle], None] | None = None
        """Called when an attempt ends (its end event is the run's last), before a
        retry; the joblog's hook. It runs on the event loop: keep it to microseconds."""

    @property
    def stopping(self) -> bool:
        return self.stop_signal is not None

    async def run(self, batches: Sequence[Batch]) -> BatchSummary:
        """Execute every run of ``batches``; returns when all have a final status.

        Remote output roots are checked before any run starts (StorageError if one
        cannot be written).
        """
        self.progress.total = sum(len(b.runs) for b in batches)
        async with self.serving():
            await self.open_roots(batches)
            jobs = ((batch, run) for batch in batches for run in batch.runs)
            async with anyio.create_task_group() as slots:
                # No more slot tasks than runs: nprocs 1,000,000 for one run makes one.
                for rank in range(min(self.nprocs, self.progress.total)):
                    slots.start_soon(self._slot, rank, jobs)
        for line in self.met_owners.lines():
            self.report(line)
        p = self.progress
        return BatchSummary(p.succeeded, p.failed, p.skipped, p.pending, self.stop_signal)

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """Hold storage, the ledger, the stop grace and the watchdog (which stops the
        runs if this process dies) for the runs executed inside."""
        async with contextlib.AsyncExitStack() as stack:
            self._stack = stack
            stack.callback(self._close_staging)
            watchdog = Watchdog(self.grace, self.report)
            stack.callback(watchdog.close)
            self._base_env[ID_VARIABLE] = watchdog.id
            self._env_cache.clear()
            stack.enter_context(prompt_scheduling())
            async with anyio.create_task_group() as tg:
                self._background = tg
                tg.start_soon(self._enforce_grace)
                tg.start_soon(watchdog.watch)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
            if self.ledger is not None:
                with anyio.CancelScope(shield=True):
                    try:
                        await self.ledger.flush()
                    except StorageError as exc:
                        self.report(
                            f"could not write the ledger: {exc}; --skip-completed will run "
                            "the runs it misses again (their status_code is stored)"
                        )

    async def open_roots(self, batches: Sequence[Batch]) -> None:
        """Open storage for the batches' shipped output roots and check each once.

        Call inside :meth:`serving`; roots already checked are not checked again. The
        staging directory is opened (and checked to be ours: InputError if not) first.
        """
        roots = sorted({self._shipped_root(b) for b in batches} - {"", *self._roots})
        if not roots:
            return
        assert self._stack is not None and self._background is not None
        if self._staging_fd is None:
            self._staging_fd = local.open_private_directory(self.staging_dir)
        if self.storage is None:
            self.storage = await self._stack.enter_async_context(storage_for(roots[0]))
        for root in roots:
            await self.storage.check(root)
        if self.ledger is None:
            self.ledger = LedgerWriter(self.storage)
            self._background.start_soon(self.ledger.flush_every)
        if self.skip_completed:
            for root in roots:
                self._ledger_statuses.update(await read_ledger(self.storage, root))
        self._roots.update(roots)

    def _close_staging(self) -> None:
        if self._staging_fd is not None:
            os.close(self._staging_fd)
            self._staging_fd = None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Start nothing new and TERM every running run.

        A second call KILLs them at once and stops retrying storage: outcomes S3 does not
        take now are kept in the staging directory, and the message says where.
        """
        if self.stop_signal is not None:
            self.force()
            if self.storage is not None:
                self.storage.stop_retrying()
            return
        self.stop_signal = sig
        self.stop_requested.set()
        for proc in self._running.values():
            proc.stop(signal.SIGTERM)

    def force(self) -> None:
        """KILL every running run now, skipping what is left of the grace period."""
        self.forced.set()
        for proc in self._running.values():
            proc.stop(signal.SIGKILL)

    async def _enforce_grace(self) -> None:
        await self.stop_requested.wait()
        await kill_after(lambda sig: self.force(), self._until_forced, self.grace)

    async def _until_forced(self) -> bool:
        await self.forced.wait()
        return False  # stop waiting: KILL now

    async def _slot(self, rank: int, jobs: Iterator[tuple[Batch, Run]]) -> None:
        for batch, run in jobs:
            if self.stopping:
                return
            assert run.remote_output_path is not None
            if await self._skipped(batch, run.remote_output_path):
                self.progress.skipped += 1
                continue
            if self.shared_slots is not None:
                await self.shared_slots.acquire()
                if self.stopping:
                    self.shared_slots.release()
                    return
            self.progress.running[rank] = RunningRun(run.cmd, time.monotonic())
            try:
                lifecycle = RunLifecycle(self, batch, run, rank)
                outcome = await lifecycle.execute() if await self._own(lifecycle) else None
            finally:
                del self.progress.running[rank]
                if self.shared_slots is not None:
                    self.shared_slots.release()
            if outcome is None:
                self.progress.skipped += 1
            elif outcome.status_code == 0 and outcome.recorded:
                self.progress.succeeded += 1
            else:
                self.progress.add_failure(
                    FailedRun(run.remote_output_path, run.cmd, outcome.status_code)
                )

    async def _own(self, lifecycle: RunLifecycle) -> bool:
        """Take the run's lease; False (the run is skipped) when another supervisor owns
        it, or finished it while this one ran."""
        owner = await lifecycle.take_lease(self.wait_for_owner)
        if owner is not None:
            self.met_owners.add_owned(owner)
        elif lifecycle.lease.released_since(self.started_at):
            await lifecycle.lease.give_back()
            self.met_owners.finished += 1
        else:
            return True
        lifecycle.outputs.close()
        return False

    def lease_for(self, location: str, outputs: RunOutputs) -> RunLease:
        """The lease of the run at ``location``: an flock in the directory it writes into
        and, for s3:// outputs, the lease object (none for queue storage, whose client
        alone writes the runs' directories)."""
        remote = None
        if is_remote(location) and not self._ship_everything:
            from saturn_async.storage.s3 import S3Storage
            from saturn_async.supervisor.s3_lease import S3Lease, lease_ttl

            assert isinstance(self.storage, S3Storage)
            remote = S3Lease(self.storage, location, lease_ttl(self.grace))
        return RunLease(outputs.directory.open, remote)

    async def _skipped(self, batch: Batch, location: str) -> bool:
        if self.skip_completed and await self._succeeded_before(location):
            return True
        return self.skip_finished and await self._finished_before(batch, location)

    async def _succeeded_before(self, location: str) -> bool:
        if self._ship_everything or is_remote(location):
            return self._ledger_statuses.get(location) == 0
        return await self.in_thread(local.read_status_code, location) == 0

    async def _finished_before(self, batch: Batch, location: str) -> bool:
        """Whether the run has a final status of this sweep, of any code (a queue's
        channel remembers the finish markers it carried)."""
        if not (self._ship_everything or is_remote(location)):
            return await self.in_thread(local.read_status_code, location) is not None
        assert self.storage is not None and self.ledger is not None
        remote = is_remote(location)
        layout = LAYOUTS[batch.layout]
        submitted = self.submitted if remote else None
        code = await recorded_outcome(self.storage, location, layout, submitted)
        if code is not None and remote and batch.remote_output_path is not None:
            # The dead worker may have died before flushing it: followers read the ledger.
            self.ledger.record(batch.remote_output_path, location, code)
        return code is not None

    def outputs_for(self, batch: Batch, run: Run) -> RunOutputs:
        """Where ``run`` writes: its own directory, or staging shipped to storage."""
        location = run.remote_output_path
        assert location is not None and batch.remote_output_path is not None
        layout = LAYOUTS[batch.layout]
        if not (self._ship_everything or is_remote(location)):
            return LocalOutputs(
                batch.remote_output_path,
                location,
                run.local_results_dir or f"{location}/{RESULTS}",
                layout,
            )
        assert self.storage is not None and self.ledger is not None
        assert self._staging_fd is not None
        return ShippedOutputs(
            self.storage,
            location,
            (self.staging_dir, self._staging_fd),
            run.local_results_dir,
            self.log_chunk_seconds,
            self.ledger,
            batch.remote_output_path,
            layout,
        )

    def environment_for(self, batch: Batch) -> dict[str, str]:
        """The environment of a batch's runs (a fresh dict the caller may change)."""
        if not batch.env:
            return dict(self._base_env)
        key = id(batch)
        if key not in self._env_cache:
            self._env_cache[key] = {**self._base_env, **batch.env}
        return dict(self._env_cache[key])

    def attempt_ended(self, lifecycle: RunLifecycle) -> None:
        if self.on_attempt_end is not None:
            self.on_attempt_end(lifecycle)

    def track(self, proc: RunProcess) -> None:
        self._running[proc.pid] = proc
        if self.stopping:  # a stop arrived while this run was being spawned
            proc.stop(signal.SIGKILL if self.forced.is_set() else signal.SIGTERM)

    def untrack(self, proc: RunProcess) -> None:
        self._running.pop(proc.pid, None)

    async def in_thread(self, func: Callable[..., T], *args: object) -> T:
        return await anyio.to_thread.run_sync(func, *args, limiter=self._io)

    def _shipped_root(self, batch: Batch) -> str:
        """The batch's output root when its outputs are shipped, else an empty string."""
        root = batch.remote_output_path or ""
        return root if self._ship_everything or is_remote(root) else ""


async def run_batches(
    batches: Sequence[Batch],
    *,
    nprocs: int | None = None,
    grace: float = 10.0,
    skip_completed: bool = False,
) -> BatchSummary:
    """Run resolved batches under one supervisor; ``nprocs`` defaults to the largest."""
    supervisor = Supervisor(slot_count(batches, nprocs), grace=grace, skip_completed=skip_completed)
    return await supervisor.run(batches)


def slot_count(batches: Sequence[Batch], nprocs: int | None = None) -> int:
    """``nprocs`` when given, else the largest ``nprocs`` of ``batches``."""
    return nprocs or max(b.nprocs or 1 for b in batches)
