"""The storage interfaces: whole objects under URL-like locations, local or remote.

A :class:`Sink` only takes writes (the queue of a results backend: what it carries is
read on the client); :class:`Storage` is a sink that also reads back what it holds
(local files, S3). A location is what ``spec.paths.normalize_location`` returns: an
absolute local path or an ``s3://bucket/key`` URL. Implementations are async context
managers; every method may be called concurrently.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from types import TracebackType
from typing import Self

import msgspec


class StoredObject(msgspec.Struct, frozen=True):
    name: str
    """The object's location relative to the listed prefix, with ``/`` separators."""
    size: int


class Sink(ABC):
    """Where whole objects are written; nothing written can be read back through it."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def stop_retrying(self) -> None:
        """From now on, let transient failures fail at once instead of retrying them.

        Called on a second stop signal, so a stop does not wait out an outage. A no-op
        for storage that retries nothing.
        """
        return None

    @abstractmethod
    async def check(self, location: str) -> None:
        """Fail fast (StorageError) when ``location`` cannot be written at all."""

    @abstractmethod
    async def put(self, location: str, data: bytes) -> None:
        """Write a whole object, replacing any object of that name."""

    @abstractmethod
    async def put_file(self, location: str, path: str) -> None:
        """Upload the local regular file ``path`` as one object, opened with
        ``results_walk.open_regular`` (NotRegularFile for a link, FIFO, socket, device)."""

    def name_problem(self, location: str) -> str | None:
        """Why this storage would refuse an object named ``location``, or None."""
        return None

    async def put_all(self, location: str, writes: Sequence[tuple[str, bytes | None]]) -> None:
        """Write ``location/NAME`` for each ``(NAME, data)`` in order; None removes it."""
        for name, data in writes:
            if data is None:
                await self.delete(f"{location}/{name}")
            else:
                await self.put(f"{location}/{name}", data)

    @abstractmethod
    async def delete(self, location: str) -> None:
        """Remove one object; no error when there is none."""

    @abstractmethod
    async def delete_below(self, prefix: str) -> None:
        """Remove every object below ``prefix`` (a run's log chunks, say)."""

    @abstractmethod
    async def move(self, source: str, target: str) -> None:
        """Rename one object (a copy then a delete where renaming does not exist)."""

    @abstractmethod
    async def move_below(self, source: str, target: str) -> None:
        """Move every object below ``source`` to the same name below ``target`` (a failed
        attempt's log chunks, say)."""


class Storage(Sink):
    """Whole-object storage. A reader never sees half an object: writes are atomic."""

    @abstractmethod
    async def get(self, location: str) -> bytes | None:
        """The object's content, or None when there is no such object."""

    async def get_range(self, location: str, start: int, length: int) -> bytes | None:
        """``length`` bytes of the object from offset ``start`` (fewer at its end; the
        range must start inside the object), or None when there is no such object.
        Storage that can read part of an object (S3) overrides this, so a reader's
        memory stays bounded."""
        data = await self.get(location)
        return None if data is None else data[start : start + length]

    @abstractmethod
    async def list(self, prefix: str) -> list[StoredObject]:
        """Every object below ``prefix`` (recursively), sorted by name."""

    async def delete_below(self, prefix: str) -> None:
        for stored in await self.list(prefix):
            await self.delete(f"{prefix}/{stored.name}")

    async def move_below(self, source: str, target: str) -> None:
        for stored in await self.list(source):
            await self.move(f"{source}/{stored.name}", f"{target}/{stored.name}")
