"""The ledger: run outcomes under a remote root, readable without one request per run.

Each supervisor appends segments to ``ROOT/.saturn/ledger/``: one object per flush,
never rewritten, holding the status codes of the runs under ROOT that finished since the
previous flush. Reading the ledger costs one listing request per 1,000 segments plus one
GET per segment, however many runs there are. The per-run ``status_code`` object stays
the truth; a run whose segment was not written (the supervisor died between the run's
``status_code`` and the next flush) is treated as not finished and runs again.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime

import anyio
import msgspec

from saturn_async.exceptions import StorageError
from saturn_async.spec.paths import RESERVED
from saturn_async.storage.base import Sink, Storage

LEDGER = f"{RESERVED}/ledger"
FLUSH_SECONDS = 10.0


class LedgerSegment(msgspec.Struct):
    written: str
    runs: dict[str, int | None]
    """Run location relative to the root -> status code (None: dispatched again, so any
    earlier outcome no longer counts)."""


_decoder = msgspec.json.Decoder(LedgerSegment)
_encoder = msgspec.json.Encoder()


class LedgerWriter:
    """Collects finished runs per root and writes them as segments."""

    def __init__(self, storage: Sink) -> None:
        self.storage = storage
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self._name = f"{stamp}-{uuid.uuid4().hex[:12]}"
        self._pending: dict[str, dict[str, int | None]] = {}
        self._seq = 0
        self._lock = anyio.Lock()

    def record(self, root: str, run: str, status_code: int | None) -> None:
        self._pending.setdefault(root, {})[run[len(root) + 1 :]] = status_code

    async def flush(self) -> None:
        """Write what was recorded since the last flush, one segment per root.

        On a StorageError, what was not written is kept for the next flush.
        """
        async with self._lock:
            pending, self._pending = self._pending, {}
            for root in list(pending):
                segment = LedgerSegment(datetime.now(UTC).isoformat(), pending[root])
                location = f"{root}/{LEDGER}/{self._name}-{self._seq:06d}.json"
                self._seq += 1
                try:
                    await self.storage.put(location, _encoder.encode(segment))
                except BaseException:
                    for unwritten, runs in pending.items():  # newer records win
                        self._pending[unwritten] = runs | self._pending.get(unwritten, {})
                    raise
                del pending[root]

    async def flush_every(self, seconds: float = FLUSH_SECONDS) -> None:
        """Flush every ``seconds``; a failed flush is tried again at the next one."""
        while True:
            await anyio.sleep(seconds)
            with contextlib.suppress(StorageError):
                await self.flush()


async def read_ledger(storage: Storage, root: str) -> dict[str, int]:
    """Every run location under ``root`` the ledger knows -> its latest status code."""
    segments: list[LedgerSegment] = []
    for stored in await storage.list(f"{root}/{LEDGER}"):
        data = await storage.get(f"{root}/{LEDGER}/{stored.name}")
        if data is not None:
            try:
                segments.append(_decoder.decode(data))
            except msgspec.DecodeError:
                continue
    statuses: dict[str, int] = {}
    for segment in sorted(segments, key=lambda s: s.written):
        for run, code in segment.runs.items():
            if code is None:
                statuses.pop(f"{root}/{run}", None)
            else:
                statuses[f"{root}/{run}"] = code
    return statuses
