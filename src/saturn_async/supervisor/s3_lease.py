"""The lease object of a run with ``s3://`` outputs: ``RUN/.saturn-lease``.

Taken with a conditional PUT (``If-None-Match: *``; ``If-Match: ETAG`` to take over a
lost lease), read back to check the holder's token, renewed every ``RENEW_SECONDS``
(``If-Match``) and released with a tombstone (``If-Match``). A lease whose holder is on
another host counts as lost once it has expired; see docs/storage.md, "Leases".
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterable

import anyio
import msgspec

from saturn_async.exceptions import StorageError
from saturn_async.storage.layout import LEASE
from saturn_async.storage.s3 import S3Storage
from saturn_async.supervisor.lease import UNKNOWN, Holder, decode, encode, holder_alive

RENEW_SECONDS = 30.0
"""How often a held lease object is renewed."""
RENEWALS_MISSED = 3
"""A lease expires ``--grace`` plus this many renewal intervals after it was renewed, so a
supervisor that misses two renewals (S3 slow, say) keeps it, and a dead one's runs are
stopped (``--grace``) before another host may take over."""
_LOOKUPS = 16
"""Lease objects ``saturn status`` reads at a time."""


def lease_ttl(grace: float) -> float:
    return grace + RENEWALS_MISSED * RENEW_SECONDS


class S3Lease:
    def __init__(self, storage: S3Storage, location: str, ttl: float) -> None:
        self.storage = storage
        self.location = f"{location}/{LEASE}"
        self.ttl = ttl
        self.previous: Holder | None = None
        """The holder found when taking over (a tombstone, a lost holder), else None."""
        self._previous_data: bytes | None = None
        self._held: Holder | None = None
        self._etag: str | None = None

    async def try_acquire(self, holder: Holder) -> Holder | None:
        """Take the lease for ``holder``: None once taken, else its live owner.

        Raises StorageError.
        """
        mine = msgspec.structs.replace(
            holder, token=secrets.token_hex(8), expires=time.time() + self.ttl
        )
        data = encode(mine)
        etag = await self.storage.put_if(self.location, data, None)
        while etag is None:  # there is a lease object: whose?
            found = await self.storage.get_tagged(self.location)
            if found is None:  # removed meanwhile (by hand)
                etag = await self.storage.put_if(self.location, data, None)
                continue
            other = decode(found[0])
            if other is not None and other.token == mine.token:
                break  # our PUT went through; its answer was lost and the retry refused
            if other is not None and holder_alive(other):
                return other
            self.previous, self._previous_data = other, found[0]
            etag = await self.storage.put_if(self.location, data, found[1])
        # Read back: an S3 that checks the condition and writes in two steps (moto_server)
        # can let a rival's PUT through too; the last one written holds the lease.
        found = await self.storage.get_tagged(self.location)
        if found is None:
            return UNKNOWN
        other = decode(found[0])
        if other is None or other.token != mine.token:
            return other or UNKNOWN
        self._held, self._etag = mine, found[1]
        return None

    async def renew(self, report: Callable[[str], None]) -> None:
        """Renew the lease every ``RENEW_SECONDS`` until cancelled."""
        while self._held is not None and self._etag is not None:
            await anyio.sleep(RENEW_SECONDS)
            renewed = msgspec.structs.replace(self._held, expires=time.time() + self.ttl)
            try:
                etag = await self._overwrite(encode(renewed), self._held.token, self._etag)
            except StorageError as exc:
                report(f"could not renew the lease {self.location}: {exc}")
                continue
            if etag is None:
                report(f"the lease {self.location} was taken over: it had expired unrenewed")
                self._held = self._etag = None
                return
            self._held, self._etag = renewed, etag

    async def release(self, finished: bool) -> None:
        """Write a tombstone when ``finished``, else what was there before (or, where
        there was nothing, the holder marked ``given_back``: free, and not finished)."""
        if self._held is None or self._etag is None:
            return
        if finished:
            data = encode(msgspec.structs.replace(self._held, released=time.time()))
        else:
            given_back = msgspec.structs.replace(self._held, given_back=True)
            data = self._previous_data or encode(given_back)
        token, etag = self._held.token, self._etag
        self._held = self._etag = None
        with contextlib.suppress(StorageError):  # then it expires
            await self._overwrite(data, token, etag)

    async def _overwrite(self, data: bytes, token: str | None, etag: str) -> str | None:
        """Write ``data`` over the lease object of ``token`` last seen at ``etag``: the new
        ETag, or None when another holder's lease is there. A write of ours whose answer
        was lost (a renewal cut off, then cancelled or retried) may have landed since, and
        the condition then fails on our own lease: read back, and write again if the
        object still names our token."""
        written = await self.storage.put_if(self.location, data, etag)
        while written is None:
            found = await self.storage.get_tagged(self.location)
            holder = decode(found[0]) if found is not None else None
            if found is None or holder is None or holder.token != token:
                return None
            written = await self.storage.put_if(self.location, data, found[1])
        return written


async def lost_holders(storage: S3Storage, locations: Iterable[str]) -> dict[str, Holder]:
    """The holders of the lost attempts at ``locations`` (runs with no status): a lease
    object there, not released, whose holder is dead or whose lease has expired."""
    lost: dict[str, Holder] = {}
    limiter = anyio.CapacityLimiter(_LOOKUPS)

    async def look(location: str) -> None:
        async with limiter:
            holder = decode(await storage.get(f"{location}/{LEASE}"))
        if holder is not None and not holder.free and not holder_alive(holder):
            lost[location] = holder

    async with anyio.create_task_group() as tg:
        for location in locations:
            tg.start_soon(look, location)
    return lost
