"""Follow a sweep from the client: take in task outcomes until every task has one.

Outcomes come pushed, not polled task by task: from the results batches return when they
end (Dask, Ray: :attr:`Outstanding.outcomes`), and from the sweep's ledger, whose
segments its supervisors write now and then while they run (supervisor/summary.py for
local results, the storage's ledger for S3 and results queues) and each is read once.
Once no batch is left, the tasks neither named are read from their own files (``status``
locally, the whole ledger on S3), which stay the truth.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import anyio
import anyio.to_thread

from saturn_async.executors.abc import Executor
from saturn_async.spec.paths import is_remote
from saturn_async.status import status_reader
from saturn_async.storage import storage_for
from saturn_async.storage.layout import (
    ERROR,
    LAYOUTS,
    LOG,
    STATUS,
    STATUS_CODE,
    Event,
    utcnow,
)
from saturn_async.storage.ledger import LedgerReader, LedgerWriter
from saturn_async.storage.local import remove_below
from saturn_async.supervisor.halt import Halt
from saturn_async.supervisor.progress import FailedRun, RunningRun, SweepProgress
from saturn_async.sweep.state import SweepRecord

POLL = 0.2
REMOTE_POLL = 2.0
"""S3 outcomes come from the ledger: a listing and a GET per new segment, so less often."""
BUSY_SHARE = 0.2
"""Polling may take at most this share of the time: a poll that takes long (noting which
of 100,000 pending tasks started, one access each) waits longer for the next."""
TERMINATED_STATUS = 143
"""The exit status recorded for a task terminated before it started (128 + SIGTERM)."""


@dataclass
class FollowOutcome:
    unfinished: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def follow(
    record: SweepRecord,
    executor: Executor,
    progress: SweepProgress,
    receive: Callable[[], Awaitable[object]] | None = None,
    commands: Mapping[str, str] = MappingProxyType({}),
    finished: Callable[[str], None] | None = None,
    halt: Halt | None = None,
    show_running: bool = True,
) -> FollowOutcome:
    """Until every task has a status, or no batch is left that could give one.

    ``receive()`` takes what waits on the sweep's results channel before each poll.
    ``commands`` (by task location) label the running and failed tasks; ``show_running``
    notes (locally) which tasks have started, for a display. ``finished(location)`` is
    called (in a thread) as each task is seen to have a status. ``halt`` counts the
    failures; once it goes off, the sweep is terminated."""
    root = record.results_root
    tasks = PendingTasks(record.tasks, progress, commands, finished, halt)
    terminated = False
    progress.running_label = "task"
    interval = REMOTE_POLL if is_remote(root) else POLL
    in_thread = anyio.to_thread.run_sync
    async with storage_for(root) as storage:
        ledger = LedgerReader(storage, root, record.created)
        while True:
            started = time.monotonic()
            # What the summaries say first: a sweep they show finished needs no engine.
            await in_thread(tasks.settle, await ledger.new_outcomes())
            if not tasks.pending:
                return FollowOutcome()
            outstanding = await executor.outstanding()
            if receive is not None:
                # After: what the batches that ended sent is on the channel by now.
                await receive()
            await in_thread(tasks.settle, outstanding.outcomes)
            await in_thread(tasks.settle, await ledger.new_outcomes())
            if not tasks.pending:
                return FollowOutcome()
            if halt is not None and halt.halted and not terminated:
                terminated = True
                await executor.terminate()
            if outstanding.batches == 0:
                # Every batch has ended: what has no status now never will.
                await in_thread(tasks.settle_from, await status_reader(root))
                return FollowOutcome(list(tasks.pending), outstanding.errors)
            if show_running and not is_remote(root):
                await in_thread(tasks.note_running)
            # A breather in proportion to the look's cost, then until a batch ends.
            await anyio.sleep(max(0.0, (time.monotonic() - started) / BUSY_SHARE - interval))
            await executor.until_changed(interval)


class PendingTasks:
    """The tasks without a known outcome yet, and the progress of those with one.

    Its methods run in a thread while the display reads ``progress``: ``running`` is
    replaced whole, never changed in place.
    """

    def __init__(
        self,
        locations: list[str],
        progress: SweepProgress,
        commands: Mapping[str, str],
        finished: Callable[[str], None] | None,
        halt: Halt | None = None,
    ) -> None:
        self.pending = dict.fromkeys(locations)
        """In the sweep's order (a dict as an ordered set)."""
        self.progress = progress
        self.commands = commands
        self.finished = finished
        self.halt = halt
        progress.total = len(self.pending)

    def settle(self, outcomes: Mapping[str, int]) -> None:
        """Count the pending tasks that ``outcomes`` (location -> status code) name."""
        if not outcomes:
            return
        running = dict(self.progress.running)
        for location, code in outcomes.items():
            if location in self.pending:
                del self.pending[location]
                running.pop(location, None)
                self._count(location, code)
        self.progress.running = running

    def settle_from(self, lookup: Callable[[str], int | None]) -> None:
        """Look every pending task up (its own files, locally) and count those done."""
        self.settle({t: c for t in self.pending if (c := lookup(t)) is not None})

    def note_running(self) -> None:
        """Note the pending tasks that have started (their log exists)."""
        running = dict(self.progress.running)
        for location in self.pending:
            if location not in running and os.access(f"{location}/{LOG}", os.F_OK):
                label = self.commands.get(location, location)
                running[location] = RunningRun(label, time.monotonic())
        self.progress.running = running

    def _count(self, location: str, code: int) -> None:
        if self.finished is not None:
            self.finished(location)
        if code == 0:
            self.progress.succeeded += 1
        else:
            cmd = self.commands.get(location) or _task_name(location)
            self.progress.add_failure(FailedRun(location, cmd, code))
            if self.halt is not None:
                self.halt.run_ended(location, code)


def _task_name(location: str) -> str:
    return location.rsplit("/", 1)[-1]


async def prepare_root(root: str, locations: Iterable[str]) -> None:
    """Before dispatch: check the results root can be written (StorageError if not),
    then drop the earlier outcome of tasks about to run, so following them does not count
    it. Locally the ``status`` and ``error`` files go; on S3 a ledger segment says the
    outcome no longer counts (the objects stay until the new outcome replaces them).
    """
    async with storage_for(root) as storage:
        await storage.check(root)
        if is_remote(root):
            ledger = LedgerWriter(storage)
            for location in locations:
                ledger.record(root, location, None)
            await ledger.flush()
            return
        await anyio.to_thread.run_sync(_remove_outcomes, root, locations)


def _remove_outcomes(root: str, locations: Iterable[str]) -> None:
    """Only in the task directories that exist, found by one listing of ``root``: a new
    sweep of a million tasks costs no ``unlink`` (three each took 11 s). A task directory
    that is a link is left alone, with what it points to."""
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        present = set(os.listdir(root_fd))
        below = len(root) + 1
        for location in locations:
            relative = location[below:]
            if location.startswith(f"{root}/") and relative.partition("/")[0] in present:
                remove_below(root_fd, relative, (STATUS, ERROR, STATUS_CODE))
    finally:
        os.close(root_fd)


async def mark_terminated(
    root: str,
    locations: list[str],
    submitted: str,
    commands: Mapping[str, str] = MappingProxyType({}),
    *,
    error: str = "not started",
    status: int = TERMINATED_STATUS,
) -> None:
    """Give tasks that never got a status one: ``failure`` (exit ``status``), with a
    ``terminated`` event saying ``error`` (and their command, from ``commands``, in the
    ``submitted`` one)."""
    if not locations:
        return
    layout = LAYOUTS["sweep"]
    async with storage_for(root) as storage:
        ledger = LedgerWriter(storage) if is_remote(root) else None
        for location in locations:
            events = [
                Event(type="submitted", utctimestamp=submitted, cmd=commands.get(location)),
                Event(type="terminated", utctimestamp=utcnow(), error=error),
            ]
            await storage.put_all(location, layout.final_writes(events, status))
            if ledger is not None:
                ledger.record(root, location, status)
        if ledger is not None:
            await ledger.flush()
