"""The outcome summary of a supervisor's sweep runs with local outputs.

A sweep's followers (``saturn run``, ``collect``) and ``saturn status --name`` learn
outcomes from it instead of opening one status file per task: the supervisor records
each run's final status code (a dict entry, on the event loop) and writes what it
recorded as a ledger segment (storage/ledger.py) under the run's root,
``ROOT/.saturn/ledger/``, atomically, stamped with the sweep's submission: soon after
the first runs end, less often as the supervisor ages (:func:`flush_interval`), and when
it stops. Runs shipped to storage (S3, a results queue) are recorded by their outputs
in the ledger of that storage instead. The per-task files stay the truth: a task that
no segment of its submission names is read from them.

On request (:attr:`OutcomeSummary.kept`) the outcomes are also kept in memory, for a
batch on an engine to return them to the client as its task's result.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

import anyio

from saturn_async.spec.models import Batch
from saturn_async.spec.paths import is_remote
from saturn_async.storage import local
from saturn_async.storage.ledger import LEDGER, LedgerWriter
from saturn_async.storage.local import LocalStorage

FIRST_FLUSH = 1.0
"""Seconds between segments while the supervisor is young."""
LAST_FLUSH = 60.0
"""The longest wait between segments: how stale a long sweep's live counts may get."""
_AGE_SHARE = 20
"""A segment at most every age / _AGE_SHARE seconds: a supervisor writes about 20
segments per tenfold of its age, then one a minute."""


class _BelowRoot(LocalStorage):
    """Local storage whose segments are written below their root without following a
    link (a run may have left one at ``ROOT/.saturn``)."""

    async def put(self, location: str, data: bytes) -> None:
        await anyio.to_thread.run_sync(_put_below_root, location, data)


def _put_below_root(location: str, data: bytes) -> None:
    root, _, below = location.partition(f"/{LEDGER}/")
    root_fd = local.open_directory(root)
    try:
        ledger_fd = local.open_below(root_fd, LEDGER, 0o755)  # readers trust no other writer
        try:
            local.write_atomically(below, data, dir_fd=ledger_fd)
        finally:
            os.close(ledger_fd)
    finally:
        os.close(root_fd)


def flush_interval(age: float) -> float:
    """Seconds until the next segment of a supervisor that started ``age`` seconds ago."""
    return min(LAST_FLUSH, max(FIRST_FLUSH, age / _AGE_SHARE))


class OutcomeSummary:
    """Final status codes of a supervisor's local sweep runs, written as ledger segments."""

    def __init__(self, submitted: str, *, keep: bool = False) -> None:
        self.ledger = LedgerWriter(_BelowRoot(), submitted)
        self.started = time.monotonic()
        self.kept: dict[str, int] | None = {} if keep else None
        """Every recorded outcome, run location -> status code (shipped runs' included),
        when asked to keep them."""

    def record(self, batch: Batch, location: str, status_code: int, shipped: bool) -> None:
        """A run's final status was recorded; ``shipped``: by storage, whose ledger has it."""
        if self.kept is not None:
            self.kept[location] = status_code
        if not shipped and batch.layout == "sweep" and not is_remote(location):
            assert batch.remote_output_path is not None
            self.ledger.record(batch.remote_output_path, location, status_code)

    async def flush_every(self) -> None:
        """Write a segment now and then; one not written is tried again at the next."""
        while True:
            await anyio.sleep(flush_interval(time.monotonic() - self.started))
            with contextlib.suppress(OSError):
                await self.ledger.flush()

    async def flush(self, report: Callable[[str], None]) -> None:
        """Write what is left (when the supervisor stops); a failure is reported only:
        followers then read those tasks' status files."""
        try:
            await self.ledger.flush()
        except OSError as exc:
            report(f"could not write the outcome summary: {exc}; the tasks' status files have it")
