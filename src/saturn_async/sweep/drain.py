"""Drain a sweep's results Queue (results backend ``Dask``) into the client's directory."""

from __future__ import annotations

from typing import Any

from saturn_async.exceptions import ExecutorError, MissingExtraError
from saturn_async.storage.dask_queue import connect
from saturn_async.sweep.collector import Collector

try:
    import distributed
except ImportError as exc:
    raise MissingExtraError("the Dask results backend", "dask") from exc


class QueueDrain:
    """Takes every message waiting on the queue and writes it under ``directory``."""

    def __init__(self, address: str, name: str, directory: str) -> None:
        try:
            self.client = connect(address)
        except OSError as exc:
            raise ExecutorError(
                f"cannot reach the Dask scheduler holding the results at {address}: {exc}"
            ) from exc
        self.queue = distributed.Queue(name, client=self.client)
        self.collector = Collector(directory)

    def close(self) -> None:
        self.client.close()

    def drain(self) -> int:
        """Apply what is waiting now; returns how many messages there were."""
        count = 0
        while True:
            waiting = self.queue.qsize()
            if not waiting:
                return count
            messages: list[dict[str, Any]] = self.queue.get(batch=waiting)
            for message in messages:
                self.collector.apply(message)
            count += len(messages)
