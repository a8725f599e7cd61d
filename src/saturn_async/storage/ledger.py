"""The ledger: run outcomes under a remote root, readable without one request per run.

Each supervisor appends segments to ``ROOT/.saturn/ledger/``: one object per flush,
never rewritten, holding the status codes of the runs under ROOT that finished since the
previous flush. Reading the ledger costs one listing request per 1,000 segments plus one
GET per segment, however many runs there are. The per-run ``status_code`` object stays
the truth; a run whose segment was not written (the supervisor died between the run's
``status_code`` and the next flush) is treated as not finished and runs again.

The supervisors of a sweep (``saturn run``) also keep a ledger under local results roots
(supervisor/summary.py), and stamp every segment with the sweep's submission, so the
followers of that submission read the outcomes of its tasks from a few segments
(:class:`LedgerReader`) instead of one status file per task.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import anyio
import anyio.to_thread
import msgspec

from saturn_async.exceptions import StorageError
from saturn_async.spec.paths import RESERVED, is_remote
from saturn_async.storage.base import Sink, Storage
from saturn_async.storage.local import shared_with_nobody

LEDGER = f"{RESERVED}/ledger"
MAX_SEGMENT_BYTES = 256 * 2**20
"""A larger segment is not read: no supervisor writes one (a minute of outcomes)."""
FLUSH_SECONDS = 10.0


class LedgerSegment(msgspec.Struct):
    written: str
    runs: dict[str, int | None]
    """Run location relative to the root -> status code (None: dispatched again, so any
    earlier outcome no longer counts)."""
    submitted: str | None = None
    """The submission of the sweep whose runs these are (``saturn run``'s dispatch time),
    when its supervisor knew one."""


_decoder = msgspec.json.Decoder(LedgerSegment)
_encoder = msgspec.json.Encoder()


class LedgerWriter:
    """Collects finished runs per root and writes them as segments."""

    def __init__(self, storage: Sink, submitted: str | None = None) -> None:
        self.storage = storage
        self.submitted = submitted
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
                segment = LedgerSegment(
                    datetime.now(UTC).isoformat(), pending[root], self.submitted
                )
                location = f"{root}/{LEDGER}/{self._name}-{self._seq:06d}.json"
                self._seq += 1
                try:
                    await self.storage.put(location, _encoder.encode(segment))
                except BaseException:
                    for unwritten, runs in pending.items():  # newer records win
                        self._pending[unwritten] = runs | self._pending.get(unwritten, {})
                    raise
                del pending[root]

    async def flush_every(self, seconds: float | Callable[[], float] = FLUSH_SECONDS) -> None:
        """Flush every ``seconds`` (or as long as it says each time); a failed flush is
        tried again at the next one."""
        while True:
            await anyio.sleep(seconds() if callable(seconds) else seconds)
            with contextlib.suppress(StorageError):
                await self.flush()


async def read_ledger(storage: Storage, root: str) -> dict[str, int]:
    """Every run location under ``root`` the ledger knows -> its latest status code."""
    return await LedgerReader(storage, root).new_outcomes()


class LedgerReader:
    """Reads the ledger of one root as it grows: segments are never rewritten, so each is
    read once. A segment that cannot be read or decoded, or is over
    :data:`MAX_SEGMENT_BYTES`, is left out (its runs' own status is read instead), and so
    is a local ledger that a user other than us could write to.

    With ``submitted`` (a sweep's followers), only the segments of that submission give
    outcomes; a run that a later segment of another submission names (another sweep of
    the same task names, or a batch file run again by hand) has no outcome here: its
    status file, the truth, was written after ours."""

    def __init__(self, storage: Storage, root: str, submitted: str | None = None) -> None:
        self.storage = storage
        self.root = root
        self.submitted = submitted
        self._seen: set[str] = set()

    async def new_segments(self) -> list[LedgerSegment]:
        """The segments written since the last call, oldest first."""
        if not is_remote(self.root) and not await anyio.to_thread.run_sync(
            shared_with_nobody, self.root, LEDGER
        ):
            return []
        segments: list[LedgerSegment] = []
        for stored in await self.storage.list(f"{self.root}/{LEDGER}"):
            if stored.name in self._seen or not stored.name.endswith(".json"):
                continue  # read already, or a local write's temporary
            self._seen.add(stored.name)
            if stored.size > MAX_SEGMENT_BYTES:
                continue
            try:
                data = await self.storage.get(f"{self.root}/{LEDGER}/{stored.name}")
                if data is not None:
                    segments.append(_decoder.decode(data))
            except (OSError, msgspec.DecodeError):
                continue
        return sorted(segments, key=lambda s: s.written)

    async def new_runs(self) -> dict[str, int | None]:
        """Run location relative to the root -> its latest status code (None: dispatched
        again, or run again by another submission), from the segments written since the
        last call."""
        runs: dict[str, int | None] = {}
        for segment in await self.new_segments():
            if self.submitted is None or segment.submitted == self.submitted:
                runs.update(segment.runs)
            else:
                runs.update(dict.fromkeys(segment.runs))
        return runs

    async def new_outcomes(self) -> dict[str, int]:
        """Run location -> status code, from the segments written since the last call."""
        root = self.root
        return {
            f"{root}/{run}": code
            for run, code in (await self.new_runs()).items()
            if code is not None
        }
