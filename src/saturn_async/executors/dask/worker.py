"""DaskExecutor on a Dask worker: the sweep's terminate Event, and the worker's slots."""

from __future__ import annotations

import anyio
import anyio.to_thread
import distributed

from saturn_async.executors.dask.queue import current_task

# How often a worker process looks at the terminate Event: one of its running batches
# at a time waits on it, for all (executors/shared_stop.py).
_EVENT_POLL = 1.0


def worker_resource(name: str) -> int:
    """This Dask worker's resource ``name`` (0 when it has none); call on a task's thread."""
    return int(distributed.get_worker().state.total_resources.get(name, 0))


class TerminateEvent:
    """The sweep's terminate Event, seen from a worker. Create it on the Dask task's
    thread, where ``get_client()`` finds the worker's client."""

    def __init__(self, name: str) -> None:
        self._client = distributed.get_client()
        self._event = distributed.Event(name, client=self._client)

    def is_set(self) -> bool:
        return bool(self._event.is_set())

    def started_before(self) -> bool:
        """Registers this start; True when the batch task started before (Dask runs it
        again when its worker dies). Kept in the scheduler's metadata under the task's
        key, which the scheduler drops with the task."""
        key = current_task()
        if key is None:
            return False
        before = self._client.get_metadata([key, "started"], False)
        self._client.set_metadata([key, "started"], True)
        return bool(before)

    async def wait(self) -> None:
        # Short is_set calls, not Event.wait: a wait left pending when the batch ends
        # would be cancelled inside distributed, which logs it as an error.
        while not await anyio.to_thread.run_sync(self.is_set):  # noqa: ASYNC110 - remote
            await anyio.sleep(_EVENT_POLL)
