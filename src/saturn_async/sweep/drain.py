"""Drain a sweep's results Queue (results backend ``Dask``) into the client's directory."""

from __future__ import annotations

from typing import Any

from saturn_async.exceptions import MissingExtraError
from saturn_async.storage.dask_queue import CONNECT_TIMEOUT
from saturn_async.sweep.collector import Collector

try:
    import distributed
except ImportError as exc:
    raise MissingExtraError("the Dask results backend", "dask") from exc


class QueueDrain:
    """Takes every message waiting on the queue and writes it under ``directory``."""

    def __init__(self, address: str, name: str, directory: str) -> None:
        self.client = distributed.Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
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
