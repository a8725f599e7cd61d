"""Storage over a Dask distributed Queue: the worker side of the ``Dask`` results backend.

Every write becomes a message on the sweep's queue; the client drains it into its own
directory (:mod:`saturn_async.sweep.collector`). Locations are the client's paths. Files
go in parts of ``PART_SIZE`` so no message is large. Nothing can be read back, so
:meth:`QueueStorage.get` finds nothing and :meth:`QueueStorage.list` lists what this
worker wrote.
"""

from __future__ import annotations

from typing import Any, Self

import anyio
import anyio.to_thread

from saturn_async.exceptions import MissingExtraError
from saturn_async.storage.base import Storage, StoredObject
from saturn_async.storage.local import read_range

try:
    import distributed
except ImportError as exc:
    raise MissingExtraError("the Dask results backend", "dask") from exc

PART_SIZE = 4 << 20


CONNECT_TIMEOUT = "10s"
"""How long connecting to a Dask scheduler may take (here, on the client, in executors)."""


class QueueStorage(Storage):
    def __init__(self, queue_name: str, scheduler_address: str) -> None:
        self.queue_name = queue_name
        self.scheduler_address = scheduler_address
        self._written: dict[str, int] = {}
        self._queue: distributed.Queue | None = None
        self._own_client: distributed.Client | None = None

    async def __aenter__(self) -> Self:
        try:  # on a Dask task's thread: the worker's client
            client = distributed.get_client()
        except ValueError:  # any other executor's worker: a client of its own
            client = await anyio.to_thread.run_sync(self._connect)
            self._own_client = client
        self._queue = distributed.Queue(self.queue_name, client=client)
        return self

    def _connect(self) -> distributed.Client:
        return distributed.Client(
            self.scheduler_address, timeout=CONNECT_TIMEOUT, set_as_default=False
        )

    async def __aexit__(self, *exc_info: object) -> None:
        if self._own_client is not None:
            await anyio.to_thread.run_sync(self._own_client.close)

    async def _send(self, message: dict[str, Any]) -> None:
        assert self._queue is not None
        await anyio.to_thread.run_sync(self._queue.put, message)

    async def check(self, location: str) -> None:
        return None

    async def put(self, location: str, data: bytes) -> None:
        await self._send({"op": "put", "location": location, "data": data})
        self._written[location] = len(data)

    async def put_file(self, location: str, path: str) -> None:
        size = (await anyio.Path(path).stat()).st_size
        offset = 0
        while True:
            data = await anyio.to_thread.run_sync(read_range, path, offset, PART_SIZE)
            last = offset + len(data) >= size
            await self._send(
                {"op": "part", "location": location, "offset": offset, "data": data, "last": last}
            )
            offset += len(data)
            if last:
                break
        self._written[location] = offset

    async def get(self, location: str) -> bytes | None:
        return None

    async def list(self, prefix: str) -> list[StoredObject]:
        start = prefix.rstrip("/") + "/"
        return sorted(
            (
                StoredObject(k[len(start) :], size)
                for k, size in self._written.items()
                if k.startswith(start)
            ),
            key=lambda o: o.name,
        )

    async def delete(self, location: str) -> None:
        await self._send({"op": "delete", "location": location})
        self._written.pop(location, None)

    async def move(self, source: str, target: str) -> None:
        await self._send({"op": "move", "location": target, "source": source})
        self._written[target] = self._written.pop(source, 0)
