"""Follow a sweep from the client: poll task statuses until every task has one.

Statuses are read where the results backend puts them: each task's ``status`` file
(LocalDir, and Dask and Ray once their channel is received into the directory) or the root's ledger
(S3; it is flushed every 10 s, so S3 progress moves in steps, read through one client
for the whole follow). Finished tasks are not polled again.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType

import anyio
import anyio.to_thread

from saturn_async.executors.abc import Executor
from saturn_async.spec.paths import is_remote
from saturn_async.storage import storage_for
from saturn_async.storage.base import Storage
from saturn_async.storage.layout import (
    ERROR,
    LAYOUTS,
    LOG,
    STATUS,
    STATUS_CODE,
    Event,
    utcnow,
)
from saturn_async.storage.ledger import LedgerWriter, read_ledger
from saturn_async.storage.local import read_status_code
from saturn_async.supervisor.halt import Halt
from saturn_async.supervisor.progress import FailedRun, RunningRun, SweepProgress
from saturn_async.sweep.state import SweepRecord

POLL = 0.2
REMOTE_POLL = 2.0
"""S3 statuses come from the ledger: one GET per segment, so it is read less often."""
BUSY_SHARE = 0.2
"""Polling may take at most this share of the time: a poll of 100,000 pending tasks
(one open each) waits longer for the next."""
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
) -> FollowOutcome:
    """Until every task has a status, or no batch is left that could give one.

    ``receive()`` takes what waits on the sweep's results channel before each poll.
    ``commands`` (by task location) label the running and failed tasks.
    ``finished(location)`` is called (in a thread) as each task is seen to have one.
    ``halt`` counts the failures; once it goes off, the sweep is terminated."""
    root = record.results_root
    async with contextlib.AsyncExitStack() as stack:
        storage = await stack.enter_async_context(storage_for(root)) if is_remote(root) else None
        return await _follow(record, executor, progress, storage, receive, commands, finished, halt)


async def _follow(
    record: SweepRecord,
    executor: Executor,
    progress: SweepProgress,
    storage: Storage | None,
    receive: Callable[[], Awaitable[object]] | None,
    commands: Mapping[str, str],
    finished: Callable[[str], None] | None,
    halt: Halt | None,
) -> FollowOutcome:
    pending = list(record.tasks)
    progress.total = len(pending)
    progress.running_label = "task"
    root = record.results_root
    interval = REMOTE_POLL if storage is not None else POLL

    async def poll(pending: list[str]) -> list[str]:
        if receive is not None:
            await receive()
        lookup = read_status_code if storage is None else (await read_ledger(storage, root)).get
        return await anyio.to_thread.run_sync(
            partial(_poll, root, pending, progress, commands, finished, lookup, halt)
        )

    terminated = False

    while True:
        started = time.monotonic()
        pending = await poll(pending)
        busy = time.monotonic() - started
        if not pending:
            return FollowOutcome()
        if halt is not None and halt.halted and not terminated:
            terminated = True
            await executor.terminate()
        outstanding = await executor.outstanding()
        if outstanding.batches == 0:
            # Every batch has ended: what has no status now never will.
            pending = await poll(pending)
            return FollowOutcome(pending, outstanding.errors)
        await anyio.sleep(max(interval, busy / BUSY_SHARE))


def _poll(
    root: str,
    pending: list[str],
    progress: SweepProgress,
    commands: Mapping[str, str] = MappingProxyType({}),
    finished: Callable[[str], None] | None = None,
    lookup: Callable[[str], int | None] = read_status_code,
    halt: Halt | None = None,
) -> list[str]:
    """Count the tasks that got a status (``lookup``: its status code, None for none);
    note (locally) those that have started.

    Runs in a thread while the display reads ``progress``: ``running`` is replaced
    whole, never changed in place.
    """
    local = not is_remote(root)
    running = dict(progress.running)
    still = []
    for location in pending:
        code = lookup(location)
        if code is None:
            still.append(location)
            if local and location not in running and os.access(f"{location}/{LOG}", os.F_OK):
                label = commands.get(location, location)
                running[location] = RunningRun(label, time.monotonic())
            continue
        running.pop(location, None)
        if finished is not None:
            finished(location)
        if code == 0:
            progress.succeeded += 1
        else:
            cmd = commands.get(location) or _task_name(location)
            progress.add_failure(FailedRun(location, cmd, code))
            if halt is not None:
                halt.run_ended(location, code)
    progress.running = running
    return still


def _task_name(location: str) -> str:
    return location.rsplit("/", 1)[-1]


async def prepare_root(root: str, locations: list[str]) -> None:
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
        await anyio.to_thread.run_sync(_remove_outcomes, locations)


def _remove_outcomes(locations: list[str]) -> None:
    for location in locations:
        for name in (STATUS, ERROR, STATUS_CODE):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                os.unlink(f"{location}/{name}")


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
