"""The client's end of a sweep's results Queue (results backend ``Dask``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio.to_thread

from saturn_async.exceptions import ExecutorError
from saturn_async.executors.dask.queue import connect, results_queue
from saturn_async.sweep.collector import Collector

if TYPE_CHECKING:
    import distributed


class QueueReceiver:
    """Takes every message waiting on the queue and writes it under ``directory``.
    Built with :meth:`open`, in a thread: connecting blocks."""

    def __init__(self, client: distributed.Client, name: str, directory: str) -> None:
        self.client = client
        self.queue = results_queue(name, client)
        self.collector = Collector(directory)

    @classmethod
    async def open(cls, address: str, name: str, directory: str) -> QueueReceiver:
        try:
            client = await anyio.to_thread.run_sync(connect, address)
        except OSError as exc:
            raise ExecutorError(
                f"cannot reach the Dask scheduler holding the results at {address}: {exc}"
            ) from exc
        return cls(client, name, directory)

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self.client.close)

    async def receive(self) -> int:
        return await anyio.to_thread.run_sync(self._receive)

    def _receive(self) -> int:
        count = 0
        while True:
            waiting = self.queue.qsize()
            if not waiting:
                return count
            messages: list[dict[str, Any]] = self.queue.get(batch=waiting)
            for message in messages:
                self.collector.apply(message)
            count += len(messages)
