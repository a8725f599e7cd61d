"""What runs on a worker: the supervisor over batches, stopped when the sweep is terminated.

Executors send :class:`WorkerJob` and batches (JSON bytes, so workers need no shared
filesystem) to :func:`run_batches`, a plain blocking function any pool can call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
from typing import Protocol

import anyio
import anyio.to_thread
import msgspec

from saturn_async.spec.models import Batch
from saturn_async.storage.base import Storage
from saturn_async.supervisor import Supervisor
from saturn_async.supervisor.shared_slots import SharedSlots, process_slots
from saturn_async.supervisor.watchdog import process_watchdog

# How often a worker looks at the terminate file.
_TERMINATE_POLL = 0.25
_batch_decoder = msgspec.json.Decoder(Batch)
_log = logging.getLogger(__name__)


class WorkerJob(msgspec.Struct, kw_only=True, frozen=True):
    """How a worker runs a sweep's batches; the same for every batch of the sweep."""

    sweep: str
    submitted: str | None = None
    """When ``saturn run`` dispatched the sweep: the time of every run's submitted event."""
    grace: float = 10.0
    log_chunk_seconds: float = 60.0
    terminate_file: str | None = None
    """Stop when this file exists (executors on the client's machine)."""
    terminate_event: str | None = None
    """Stop when this distributed Event is set (Dask)."""
    terminate_actor: str | None = None
    """Stop when this Ray actor says the sweep was terminated (Ray)."""
    results_queue: str | None = None
    """Ship every output through this distributed Queue (results backend Dask)..."""
    results_scheduler: str | None = None
    """... on this scheduler."""
    results_actor: str | None = None
    """Ship every output to this Ray actor (results backend Ray)."""
    slots_resource: str | None = None
    """Share run slots among the batches on one Dask worker: as many as the worker's
    resource of this name."""
    client_cwd: str | None = None
    """The working directory of ``saturn run``: batches without ``working_dir`` start
    their runs there when this worker has it, else in the worker's own (with a warning)."""


class WorkerSummary(msgspec.Struct, kw_only=True, frozen=True):
    succeeded: int
    failed: int
    skipped: int
    not_started: int
    terminated: bool
    outcomes: dict[str, int] = msgspec.field(default_factory=dict)
    """The final status code of every run this worker recorded, by output location: the
    client learns its batch's outcomes from this result, without reading them back."""


class StopSignal(Protocol):
    """How a worker learns that its sweep was terminated."""

    def is_set(self) -> bool: ...

    def started_before(self) -> bool:
        """Called once, after ``is_set``: whether this batch started before and its engine
        runs it again (its worker died), so runs with a final status are skipped."""

    async def wait(self) -> None: ...


class TerminateFile:
    """Set when a file exists (executors on the client's machine)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def is_set(self) -> bool:
        return os.access(self.path, os.F_OK)

    def started_before(self) -> bool:
        return False  # local executors never run a batch twice

    async def wait(self) -> None:
        path = anyio.Path(self.path)
        while not await path.exists():  # noqa: ASYNC110 - set by another process
            await anyio.sleep(_TERMINATE_POLL)


def run_batches(job: WorkerJob, batches: list[bytes]) -> WorkerSummary:
    """Run ``batches`` under one supervisor (slots shared); blocks until all are done.

    A sweep terminated before this starts runs nothing. Run again by its engine after
    its worker died, it skips the runs that have a final status.
    """
    decoded = [_batch_decoder.decode(b) for b in batches]
    if job.client_cwd is not None:
        _start_in(job.client_cwd, decoded)
    stop = _stop_signal(job)
    if stop is not None and stop.is_set():
        not_started = sum(len(b.runs) for b in decoded)
        return WorkerSummary(
            succeeded=0, failed=0, skipped=0, not_started=not_started, terminated=True
        )
    rerun = stop is not None and stop.started_before()
    return anyio.run(_run, job, decoded, stop, rerun)


def _start_in(directory: str, batches: list[Batch]) -> None:
    """Runs of ``batches`` without a working_dir start in ``directory``, if it exists."""
    if not os.path.isdir(directory):
        _log.warning(
            "saturn: %s (the working directory of saturn run) does not exist on %s; runs "
            "start in the worker's: %s",
            directory,
            socket.gethostname(),
            os.getcwd(),
        )
        return
    for batch in batches:
        if batch.working_dir is None:
            batch.working_dir = directory


async def _run(
    job: WorkerJob, batches: list[Batch], stop: StopSignal | None, rerun: bool
) -> WorkerSummary:
    """``rerun``: the engine runs these batches again, so runs with a final status are
    skipped (they finished before the worker died)."""
    async with contextlib.AsyncExitStack() as stack:
        storage = await _queue_storage(stack, job)
        supervisor = Supervisor(
            max(b.nprocs or 1 for b in batches),
            grace=job.grace,
            log_chunk_seconds=job.log_chunk_seconds,
            storage=storage,
            shared_slots=_shared_slots(job),
            submitted=job.submitted,
            skip_finished=rerun,
            keep_outcomes=True,
            watchdog=process_watchdog(job.grace, _log.warning),
        )
        async with anyio.create_task_group() as tg:
            if stop is not None:
                tg.start_soon(_stop_when, stop, supervisor)
            summary = await supervisor.run(batches)
            tg.cancel_scope.cancel()
    return WorkerSummary(
        succeeded=summary.succeeded,
        failed=summary.failed,
        skipped=summary.skipped,
        not_started=summary.not_started,
        terminated=summary.stop_signal is not None,
        outcomes=supervisor.summary.kept or {},
    )


async def _stop_when(stop: StopSignal, supervisor: Supervisor) -> None:
    await stop.wait()
    supervisor.stop(signal.SIGTERM)


def _stop_signal(job: WorkerJob) -> StopSignal | None:
    if job.terminate_file is not None:
        return TerminateFile(job.terminate_file)
    if job.terminate_event is not None:
        from saturn_async.executors.dask import TerminateEvent

        return TerminateEvent(job.terminate_event)
    if job.terminate_actor is not None:
        from saturn_async.executors.ray import TerminateActor

        return TerminateActor(job.terminate_actor)
    return None


def _shared_slots(job: WorkerJob) -> SharedSlots | None:
    if job.slots_resource is None:
        return None
    from saturn_async.executors.dask import worker_resource

    count = worker_resource(job.slots_resource)
    return process_slots(job.slots_resource, count) if count else None


async def _queue_storage(stack: contextlib.AsyncExitStack, job: WorkerJob) -> Storage | None:
    from saturn_async.storage.queue import Channel, QueueStorage

    channel: Channel
    if job.results_actor is not None:
        from saturn_async.executors.ray import ActorChannel

        channel = ActorChannel(job.results_actor)
    elif job.results_queue is not None and job.results_scheduler is not None:
        from saturn_async.storage.dask_queue import DaskChannel

        channel = DaskChannel(job.results_queue, job.results_scheduler)
    else:
        return None
    return await stack.enter_async_context(QueueStorage(channel))
