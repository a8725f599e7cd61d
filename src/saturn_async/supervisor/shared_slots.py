"""Run slots shared by every supervisor in one process.

A Dask worker runs several batches at once, each under its own supervisor, all in the
process's one event loop (executors/worker.py). With shared slots, a batch whose last
runs are finishing leaves its idle slots to the other batches on the worker, so no slot
waits for a batch's slowest run.
"""

from __future__ import annotations

import os
import threading

import anyio


class SharedSlots:
    """Used from one event loop: the process's loop for batches."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._semaphore = anyio.Semaphore(count, max_value=count)

    async def acquire(self) -> None:
        await self._semaphore.acquire()

    def release(self) -> None:
        self._semaphore.release()


_lock = threading.Lock()
_process_slots: dict[str, SharedSlots] = {}
os.register_at_fork(after_in_child=_process_slots.clear)  # the parent's loop is not ours


def process_slots(name: str, count: int) -> SharedSlots:
    """The process's slots called ``name``, created with ``count`` on first use."""
    with _lock:
        return _process_slots.setdefault(name, SharedSlots(count))
