"""The client's end of a sweep's results channel (results backends ``Dask`` and ``Ray``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from saturn_async.exceptions import ExecutorError
from saturn_async.executors.abc import Executor, ResultsReceiver
from saturn_async.executors.jobs import DaskQueue, RayActor, ResultsVia
from saturn_async.sweep.state import SweepRecord


@contextlib.asynccontextmanager
async def results_receiver(
    record: SweepRecord, executor: Executor
) -> AsyncIterator[ResultsReceiver | None]:
    """What writes the outputs waiting on the sweep's channel into its results directory;
    None when its workers write there themselves."""
    channel = record.results_via or _recorded_before(record)
    if channel is None:
        yield None
        return
    receiver = executor.receiver(channel, record.results_root)
    if receiver is None and isinstance(channel, DaskQueue):
        from saturn_async.executors.dask.receiver import QueueReceiver

        receiver = await QueueReceiver.open(channel.scheduler, channel.name, record.results_root)
    if receiver is None:
        raise ExecutorError(f"{type(executor).__name__} cannot read the results of {channel}")
    try:
        yield receiver
    finally:
        await receiver.aclose()


def _recorded_before(record: SweepRecord) -> ResultsVia | None:
    """The channel as records written before ``results_via`` name it (in ``handle``)."""
    handle = record.handle
    if "results_actor" in handle:
        return RayActor(handle["results_actor"])
    if "results_queue" in handle and "results_scheduler" in handle:
        return DaskQueue(handle["results_queue"], handle["results_scheduler"])
    return None
