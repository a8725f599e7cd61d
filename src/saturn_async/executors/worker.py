"""What runs on a worker: the supervisor over batches, stopped when the sweep is terminated.

Executors send a :class:`~saturn_async.executors.jobs.WorkerJob` and batches (JSON bytes,
so workers need no shared filesystem) to :func:`run_batches`, a plain blocking function
any pool or remote engine can call: it is the one place on the worker side that starts
an event loop: one per process, on a thread of its own, which every batch the process
runs at once shares (a Dask worker runs one batch per thread). Executors that run
batches in the client's own loop await :func:`run_job`.

The job's stop, results and slots variants are turned into the objects that implement
them here, each imported only when the job names it (``executors/dask/worker.py``,
``executors/ray/worker.py``); those modules import only the job types.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import queue
import signal
import socket
import threading
from typing import Protocol

import anyio
import msgspec
from anyio.from_thread import BlockingPortal

from saturn_async.executors.jobs import (
    DaskEvent,
    DaskQueue,
    RayActor,
    StopVia,
    TerminateFile,
    WorkerJob,
    WorkerSummary,
)
from saturn_async.executors.shared_stop import shared_wait
from saturn_async.linux import prompt_scheduling
from saturn_async.spec.models import Batch
from saturn_async.storage.queue import Channel, QueueSink
from saturn_async.supervisor import Supervisor
from saturn_async.supervisor.shared_slots import SharedSlots, process_slots
from saturn_async.supervisor.start_gate import batches_gate
from saturn_async.supervisor.watchdog import process_watchdog

# How often a worker looks at the terminate file.
_TERMINATE_POLL = 0.25
_batch_decoder = msgspec.json.Decoder(Batch)
_log = logging.getLogger(__name__)


class StopSignal(Protocol):
    """How a worker learns that its sweep was terminated."""

    def is_set(self) -> bool: ...

    def started_before(self) -> bool:
        """Called once, after ``is_set``: whether this batch started before and its engine
        runs it again (its worker died), so runs with a final status are skipped."""

    async def wait(self) -> None: ...


class FileStop:
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
    its worker died, it skips the runs that have a final status. Call it on a thread
    that runs no event loop (a pool worker, a Dask or Ray task): what the engine keeps
    per thread (the Dask worker's client, the task's key, its resources) is looked up
    here, and the batches then run in the process's event loop.
    """
    decoded = [_batch_decoder.decode(b) for b in batches]
    stop = _stop_signal(job.stop)
    if stop is not None and stop.is_set():
        return _not_started(decoded)
    rerun = stop is not None and stop.started_before()
    channel, slots = _results_channel(job), _shared_slots(job)
    running = _process_loop().start_task_soon(_run, job, decoded, stop, rerun, channel, slots)
    try:
        return running.result()
    except BaseException:
        # Interrupted here (Ray cancels the task of a dead owner): the batch goes too,
        # as it did when its loop ran on this thread.
        running.cancel()
        concurrent.futures.wait([running])
        raise


_loop_lock = threading.Lock()
_loop: BlockingPortal | None = None


def _process_loop() -> BlockingPortal:
    """The process's event loop for batches, started on first use on a daemon thread.

    One loop, not one per batch thread: several threads of one interpreter each running
    an event loop spend a third of the runs' throughput handing the GIL to each other
    (docs/benchmarks.md), and slots shared in one loop need no thread to wait in.
    """
    global _loop
    with _loop_lock:
        if _loop is None:
            ready: queue.SimpleQueue[BlockingPortal] = queue.SimpleQueue()
            thread = threading.Thread(
                target=anyio.run, args=(_serve, ready), name="saturn batches", daemon=True
            )
            thread.start()
            _loop = ready.get()
        return _loop


async def _serve(ready: queue.SimpleQueue[BlockingPortal]) -> None:
    # The thread keeps the short slice the supervisors ask for while they serve, for its
    # life: theirs overlap, and each gives back what it found.
    with prompt_scheduling():
        async with BlockingPortal() as portal:
            ready.put(portal)
            await portal.sleep_until_stopped()


def _forget_loop() -> None:
    """In a forked child the loop's thread does not exist: it starts its own."""
    global _loop
    _loop = None


os.register_at_fork(after_in_child=_forget_loop)


async def run_job(job: WorkerJob, batches: list[Batch]) -> WorkerSummary:
    """:func:`run_batches` in the caller's event loop (executors on the client's machine,
    whose stop signals never block)."""
    stop = _stop_signal(job.stop)
    if stop is not None and stop.is_set():
        return _not_started(batches)
    return await _run(job, batches, stop, False, _results_channel(job), _shared_slots(job))


def _not_started(batches: list[Batch]) -> WorkerSummary:
    not_started = sum(len(b.runs) for b in batches)
    return WorkerSummary(succeeded=0, failed=0, skipped=0, not_started=not_started, terminated=True)


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
    job: WorkerJob,
    batches: list[Batch],
    stop: StopSignal | None,
    rerun: bool,
    channel: Channel | None,
    slots: SharedSlots | None,
) -> WorkerSummary:
    """``rerun``: the engine runs these batches again, so runs with a final status are
    skipped (they finished before the worker died)."""
    if job.client_cwd is not None:
        _start_in(job.client_cwd, batches)
    async with contextlib.AsyncExitStack() as stack:
        sink = None if channel is None else await stack.enter_async_context(QueueSink(channel))
        supervisor = Supervisor(
            max(b.nprocs or 1 for b in batches),
            grace=job.grace,
            log_chunk_seconds=job.log_chunk_seconds,
            sink=sink,
            shared_slots=slots,
            submitted=job.submitted,
            skip_finished=rerun,
            # The batches' gpus, on this worker (all: its GPUs, or the engine's share).
            gate=batches_gate([("batch", b) for b in batches], None, None, None, _log.warning),
            keep_outcomes=True,
            watchdog=process_watchdog(job.grace, _log.warning),
        )
        async with anyio.create_task_group() as tg:
            if stop is not None:
                tg.start_soon(_stop_when, msgspec.json.encode(job.stop), stop, supervisor)
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


async def _stop_when(via: bytes, stop: StopSignal, supervisor: Supervisor) -> None:
    await shared_wait(via, stop.wait)
    supervisor.stop(signal.SIGTERM)


def _stop_signal(via: StopVia | None) -> StopSignal | None:
    match via:
        case TerminateFile(path=path):
            return FileStop(path)
        case DaskEvent(name=name):
            from saturn_async.executors.dask.worker import TerminateEvent

            return TerminateEvent(name)
        case RayActor(name=name):
            from saturn_async.executors.ray.worker import TerminateActor

            return TerminateActor(name)
    return None


def _shared_slots(job: WorkerJob) -> SharedSlots | None:
    if job.slots is None:
        return None
    from saturn_async.executors.dask.worker import worker_resource

    count = worker_resource(job.slots.name)
    return process_slots(job.slots.name, count) if count else None


def _results_channel(job: WorkerJob) -> Channel | None:
    match job.results:
        case RayActor(name=name):
            from saturn_async.executors.ray.worker import ActorChannel

            return ActorChannel(name)
        case DaskQueue(name=name, scheduler=scheduler):
            from saturn_async.executors.dask.queue import DaskChannel

            return DaskChannel(name, scheduler)
    return None
