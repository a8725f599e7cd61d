"""Run slots shared by every supervisor in one process.

A Dask worker runs several batches at once, each under its own supervisor on its own
thread. With shared slots, a batch whose last runs are finishing leaves its idle slots
to the other batches on the worker, so no slot waits for a batch's slowest run.
"""

from __future__ import annotations

import threading

import anyio.to_thread

# How long a waiting slot blocks in its thread before it lets cancellation in.
_WAIT = 0.2


class SharedSlots:
    def __init__(self, count: int) -> None:
        self.count = count
        self._semaphore = threading.BoundedSemaphore(count)

    async def acquire(self) -> None:
        if self._semaphore.acquire(blocking=False):
            return
        while not await anyio.to_thread.run_sync(self._semaphore.acquire, True, _WAIT):
            pass

    def release(self) -> None:
        self._semaphore.release()


_lock = threading.Lock()
_process_slots: dict[str, SharedSlots] = {}


def process_slots(name: str, count: int) -> SharedSlots:
    """The process's slots called ``name``, created with ``count`` on first use."""
    with _lock:
        return _process_slots.setdefault(name, SharedSlots(count))
