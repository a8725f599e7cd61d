"""The supervisor: ``nprocs`` slots shared by every run of every batch, and shutdown."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import anyio
import anyio.to_thread

from saturn_async.spec.models import Batch, Run
from saturn_async.storage import local
from saturn_async.storage.layout import utcnow
from saturn_async.supervisor.lifecycle import RunLifecycle
from saturn_async.supervisor.process import RunProcess
from saturn_async.supervisor.progress import FailedRun, RunningRun, SweepProgress

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
        report: Callable[[str], None] | None = None,
    ) -> None:
        if nprocs < 1:
            raise ValueError("nprocs must be at least 1")
        self.nprocs = nprocs
        self.grace = grace
        self.skip_completed = skip_completed
        self.report = report or (lambda message: print(message, file=sys.stderr))
        self.progress = SweepProgress(total=0)
        self.submitted = utcnow()
        self.stop_signal: int | None = None
        self._running: dict[int, RunProcess] = {}
        self._base_env = dict(os.environ)
        self._env_cache: dict[int, dict[str, str]] = {}
        self._io = anyio.CapacityLimiter(min(nprocs, _MAX_IO_THREADS))
        self._stop_requested = anyio.Event()
        self.forced = anyio.Event()

    @property
    def stopping(self) -> bool:
        return self.stop_signal is not None

    async def run(self, batches: Sequence[Batch]) -> BatchSummary:
        """Execute every run of ``batches``; returns when all have a final status."""
        self.progress.total = sum(len(b.runs) for b in batches)
        jobs = ((batch, run) for batch in batches for run in batch.runs)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._enforce_grace)
            async with anyio.create_task_group() as slots:
                for rank in range(self.nprocs):
                    slots.start_soon(self._slot, rank, jobs)
            tg.cancel_scope.cancel()
        p = self.progress
        return BatchSummary(p.succeeded, p.failed, p.skipped, p.pending, self.stop_signal)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Start nothing new and TERM every running run; a second call forces (KILL)."""
        if self.stop_signal is not None:
            self.force()
            return
        self.stop_signal = sig
        self._stop_requested.set()
        for proc in self._running.values():
            proc.terminated = True
            proc.signal_group(signal.SIGTERM)

    def force(self) -> None:
        """KILL every running run now, skipping what is left of the grace period."""
        self.forced.set()
        for proc in self._running.values():
            proc.terminated = True
            proc.signal_group(signal.SIGKILL)

    async def _enforce_grace(self) -> None:
        await self._stop_requested.wait()
        with anyio.move_on_after(self.grace):
            await self.forced.wait()
        self.force()

    async def _slot(self, rank: int, jobs: Iterator[tuple[Batch, Run]]) -> None:
        for batch, run in jobs:
            if self.stopping:
                return
            assert run.remote_output_path is not None
            if (
                self.skip_completed
                and await self.in_thread(local.read_status_code, run.remote_output_path) == 0
            ):
                self.progress.skipped += 1
                continue
            self.progress.running[rank] = RunningRun(run.remote_output_path, time.monotonic())
            try:
                outcome = await RunLifecycle(self, batch, run, rank).execute()
            finally:
                del self.progress.running[rank]
            if outcome.status_code == 0 and outcome.recorded:
                self.progress.succeeded += 1
            else:
                self.progress.add_failure(
                    FailedRun(run.remote_output_path, run.cmd, outcome.status_code)
                )

    def environment_for(self, batch: Batch) -> dict[str, str]:
        """The environment of a batch's runs (a fresh dict the caller may change)."""
        if not batch.env:
            return dict(self._base_env)
        key = id(batch)
        if key not in self._env_cache:
            self._env_cache[key] = {**self._base_env, **batch.env}
        return dict(self._env_cache[key])

    def track(self, proc: RunProcess) -> None:
        self._running[proc.pid] = proc
        if self.stopping:  # a stop arrived while this run was being spawned
            proc.terminated = True
            proc.signal_group(signal.SIGKILL if self.forced.is_set() else signal.SIGTERM)

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
