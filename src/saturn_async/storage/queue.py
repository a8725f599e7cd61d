"""A sink of messages on a queue: the worker side of the ``Dask`` and ``Ray`` results backends.

Every write becomes a message on the sweep's queue (a :class:`Channel`); the client
receives it into its own directory (:mod:`saturn_async.sweep.collector`). Locations are the
client's paths. Files go in parts of ``PART_SIZE`` so no message is large. Nothing can be
read back (:class:`QueueSink` is a :class:`~saturn_async.storage.base.Sink`, not
Storage), with one explicit exception: the channel remembers the finish markers it
carried, and :meth:`QueueSink.recorded_final` says whether a run has one, so a batch
run again after its worker died skips the runs that finished.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, Self

import anyio.to_thread

from saturn_async.storage.base import Sink
from saturn_async.storage.layout import FINAL_MARKERS
from saturn_async.storage.results_walk import open_regular, read_at

PART_SIZE = 4 << 20


def puts_finish_marker(message: dict[str, Any]) -> bool:
    """Whether ``message`` writes a run's finish marker (which comes after its other files)."""
    location = str(message.get("location", ""))
    return message.get("op") == "put" and os.path.basename(location) in FINAL_MARKERS


class Channel(Protocol):
    """Carries messages, in order, to the client that receives them."""

    async def open(self) -> None: ...

    async def send(self, message: dict[str, Any]) -> None: ...

    async def final(self, location: str) -> bytes | None:
        """The finish marker put at ``location`` that this channel carried for the sweep
        (from any worker), or None when it carried none or keeps no record of them."""

    async def close(self) -> None: ...


class QueueSink(Sink):
    """Every write is a message on ``channel``; the receiving client applies them in order."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    async def __aenter__(self) -> Self:
        await self.channel.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.channel.close()

    async def check(self, location: str) -> None:
        return None

    async def put(self, location: str, data: bytes) -> None:
        await self.channel.send({"op": "put", "location": location, "data": data})

    def name_problem(self, location: str) -> str | None:
        try:
            location.encode()
        except UnicodeEncodeError:
            return "its name is not UTF-8, which queue messages must be"
        return None

    async def put_file(self, location: str, path: str) -> None:
        fd, size = await anyio.to_thread.run_sync(open_regular, path)
        try:
            offset = 0
            while True:
                data = await anyio.to_thread.run_sync(read_at, fd, offset, PART_SIZE)
                last = not data or offset + len(data) >= size
                await self.channel.send(
                    {
                        "op": "part",
                        "location": location,
                        "offset": offset,
                        "data": data,
                        "last": last,
                    }
                )
                offset += len(data)
                if last:
                    break
        finally:
            os.close(fd)

    async def delete(self, location: str) -> None:
        await self.channel.send({"op": "delete", "location": location})

    async def delete_below(self, prefix: str) -> None:
        """One message: the client removes the directory ``prefix``."""
        await self.channel.send({"op": "delete_below", "location": prefix})

    async def move(self, source: str, target: str) -> None:
        await self.channel.send({"op": "move", "location": target, "source": source})

    async def move_below(self, source: str, target: str) -> None:
        """One message: the client moves the files of the directory ``source`` into
        ``target``."""
        await self.channel.send({"op": "move_below", "location": target, "source": source})

    async def recorded_final(self, location: str) -> bytes | None:
        """The finish marker (a ``FINAL_MARKERS`` name) put at ``location`` for this
        sweep, by any worker, as the channel remembers it; None when it carried none."""
        assert os.path.basename(location) in FINAL_MARKERS, location
        return await self.channel.final(location)
