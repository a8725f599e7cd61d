"""The supervisor: ``nprocs`` slots shared by every run of every batch, and shutdown."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import anyio
import anyio.abc
import anyio.to_thread

from saturn_async.linux import prompt_scheduling
from saturn_async.spec.halt import HaltPolicy
from saturn_async.spec.models import Batch, Run
from saturn_async.storage.layout import utcnow
from saturn_async.storage.queue import QueueSink
from saturn_async.supervisor.halt import Halt, halts_for
from saturn_async.supervisor.lease import MetOwners
from saturn_async.supervisor.lifecycle import Outcome, RunLifecycle
from saturn_async.supervisor.memory_caps import MemoryCaps
from saturn_async.supervisor.process import RunProcess, kill_after
from saturn_async.supervisor.progress import FailedRun, RunningRun, SweepProgress
from saturn_async.supervisor.run_storage import RunStorage
from saturn_async.supervisor.shared_slots import SharedSlots
from saturn_async.supervisor.start_gate import StartGate, Ticket
from saturn_async.supervisor.summary import OutcomeSummary
from saturn_async.supervisor.watchdog import ID_VARIABLE, Watchdog

T = TypeVar("T")
# Threads for blocking filesystem work; each slot uses at most one at a time.
_MAX_IO_THREADS = 16


@dataclass(frozen=True, slots=True)
class BatchSummary:
    succeeded: int
    failed: int
    skipped: int
    not_started: int
    stop_signal: int | None
    """The signal that interrupted the supervisor, if one did."""
    halted_by: tuple[str, ...] = ()
    """The runs whose failures set off a halt (``--halt``, ``halt:``), one per halt."""
    requeued: int = 0
    """Runs stopped for a requeue (``--requeue-on-term``), left without a status."""

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
        sink: QueueSink | None = None,
        shared_slots: SharedSlots | None = None,
        submitted: str | None = None,
        memory_caps: MemoryCaps | None = None,
        gate: StartGate | None = None,
        halt: HaltPolicy | None = None,
        keep_outcomes: bool = False,
        watchdog: Watchdog | None = None,
        requeue_signal: int | None = None,
    ) -> None:
        """``sink``, when given, receives every run's outputs, local paths included
        (they are then names the client that receives the queue writes).
        ``shared_slots``, when given, must also be held by each run: slots shared with
        other supervisors in this process. ``submitted`` is the time of the runs'
        ``submitted`` event (default: now). A run whose lease another supervisor holds
        is skipped, or with ``wait_for_owner`` waited for (see supervisor/lease.py).
        ``skip_finished`` skips the runs that already have a final status of this sweep,
        whatever its code: set when an engine runs a batch again after its worker died
        (a run still owned, by a dying incarnation, is then waited for, never skipped).
        ``memory_caps``: the default cap and how caps are enforced (default: no default
        cap, enforced by cgroups, see supervisor/memory_caps.py). ``halt`` (``--halt``)
        holds for all the runs of :meth:`run` together; without it, each batch's ``halt:``
        holds for its own runs (supervisor/halt.py).
        ``keep_outcomes`` keeps every run's final status in ``summary.kept``.
        ``watchdog``, when given, is shared with other supervisors (not closed here).
        ``requeue_signal``: a first stop by this signal means the job system will run the
        batch again (``--requeue-on-term``): the runs it stops record nothing and give
        their lease back, for the batch run again with ``skip_finished`` to rerun."""
        if nprocs < 1:
            raise ValueError("nprocs must be at least 1")
        self.nprocs = nprocs
        self.grace = grace
        self.skip_completed = skip_completed
        self.report = report or (lambda message: print(message, file=sys.stderr))
        self.submitted = submitted or utcnow()
        self.summary = OutcomeSummary(self.submitted, keep=keep_outcomes)
        self.run_storage = RunStorage(
            submitted=self.submitted,
            skip_completed=skip_completed,
            staging_dir=staging_dir,
            sink=sink,
            log_chunk_seconds=log_chunk_seconds,
            report=self.report,
        )
        self.wait_for_owner = wait_for_owner or skip_finished
        self.met_owners = MetOwners()
        self.started_at = time.time()
        self.skip_finished = skip_finished
        self.shared_slots = shared_slots
        self.memory_caps = memory_caps or MemoryCaps(report=self.report)
        self.gate = gate
        self.progress = SweepProgress(total=0)
        self.stop_signal: int | None = None
        self.requeue_signal = requeue_signal
        self._running: dict[int, RunProcess] = {}
        self._base_env = dict(os.environ)
        self._env_cache: dict[int, dict[str, str]] = {}
        self._io = anyio.CapacityLimiter(min(nprocs, _MAX_IO_THREADS))
        self.stop_requested = anyio.Event()
        self.forced = anyio.Event()
        self.retries_cut = anyio.Event()
        self.halt_policy = halt
        self._halts: dict[int, Halt] = {}
        self._stack: contextlib.AsyncExitStack | None = None
        self._background: anyio.abc.TaskGroup | None = None
        self._watchdog = watchdog
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
        self._halts = halts_for(batches, self.halt_policy)
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
        halted_by = tuple(dict.fromkeys(h.trigger for h in self._halts.values() if h.trigger))
        return BatchSummary(
            p.succeeded, p.failed, p.skipped, p.pending, self.stop_signal, halted_by, p.requeued
        )

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """Hold storage, the ledger, the stop grace and the watchdog (which stops the
        runs if this process dies) for the runs executed inside."""
        async with contextlib.AsyncExitStack() as stack:
            self._stack = stack
            stack.callback(self.run_storage.close_staging)
            stack.callback(self.memory_caps.close)
            watchdog = self._watchdog or Watchdog(self.grace, self.report)
            if self._watchdog is None:  # a shared one is watched by its own thread
                stack.callback(watchdog.close)
            self._base_env[ID_VARIABLE] = watchdog.id
            self._env_cache.clear()
            stack.enter_context(prompt_scheduling())
            async with anyio.create_task_group() as tg:
                self._background = tg
                tg.start_soon(self._enforce_grace)
                if self._watchdog is None:
                    tg.start_soon(watchdog.watch)
                tg.start_soon(self.summary.flush_every)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await self.run_storage.flush_ledger()
                await self.summary.flush(self.report)

    async def open_roots(self, batches: Sequence[Batch]) -> None:
        """Open storage for the batches' shipped output roots, inside :meth:`serving`
        (see :meth:`RunStorage.open_roots`)."""
        assert self._stack is not None and self._background is not None
        await self.run_storage.open_roots(list(batches), self._stack, self._background)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Start nothing new and TERM every running run.

        A second call KILLs them at once and stops retrying storage: outcomes S3 does not
        take now are kept in the staging directory, and the message says where.
        """
        if self.stop_signal is not None:
            self.force()
            self.run_storage.stop_retrying()
            return
        self.stop_signal = sig
        self.stop_requested.set()
        self.retries_cut.set()
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
        halts = self._halts
        for batch, run in jobs:
            if self.stopping:
                return
            assert run.remote_output_path is not None
            halt = halts.get(id(batch)) if halts else None
            if halt is not None and halt.halted:
                continue  # not started: it records nothing
            if await self._skipped(batch, run.remote_output_path):
                self.progress.skipped += 1
                continue
            if self.shared_slots is not None:
                await self.shared_slots.acquire()
                if self.stopping:
                    self.shared_slots.release()
                    return
            ticket: Ticket | None = None
            if self.gate is not None:
                try:
                    ticket = await self.gate.enter(batch, run, lambda: self.stopping)
                except BaseException:
                    self._leave(None)
                    raise
                if ticket is None or self.stopping:
                    self._leave(ticket)
                    return
            self.progress.running[rank] = RunningRun(run.cmd, time.monotonic())
            try:
                lifecycle = RunLifecycle(self, batch, run, rank, halt=halt)
                if ticket is not None:
                    lifecycle.env.update(ticket.gpu_env)
                owned = await self._own(lifecycle)
                if owned and halt is not None and halt.halted:  # while the lease was taken
                    await lifecycle.let_go()
                    continue
                outcome = await lifecycle.execute() if owned else None
            finally:
                del self.progress.running[rank]
                self._leave(ticket)
            if outcome is None:
                self.progress.skipped += 1
            elif outcome.requeued:  # nothing recorded: the batch runs again
                self.progress.requeued += 1
            else:
                self._count(lifecycle, outcome)

    def _count(self, lifecycle: RunLifecycle, outcome: Outcome) -> None:
        """Count a run's final status, in the summary, the progress and its halt."""
        run, location = lifecycle.run, lifecycle.run_dir
        if outcome.recorded:
            shipped = self.run_storage.ships(location)
            self.summary.record(lifecycle.batch, location, outcome.status_code, shipped)
        if outcome.status_code == 0 and outcome.recorded:
            self.progress.succeeded += 1
            return
        self.progress.add_failure(FailedRun(location, run.cmd, outcome.status_code))
        halt = lifecycle.halt
        if halt is not None and halt.run_ended(
            location, outcome.status_code, lifecycle.halted_by is not None
        ):
            self.report(halt.describe())

    def _leave(self, ticket: Ticket | None) -> None:
        """Give back a run's slot and its pass."""
        if ticket is not None:
            assert self.gate is not None
            self.gate.leave(ticket)
        if self.shared_slots is not None:
            self.shared_slots.release()

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

    async def _skipped(self, batch: Batch, location: str) -> bool:
        storage = self.run_storage
        if self.skip_completed and await storage.succeeded_before(location, self.in_thread):
            return True
        return self.skip_finished and await storage.finished_before(
            batch, location, self.submitted, self.in_thread
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
