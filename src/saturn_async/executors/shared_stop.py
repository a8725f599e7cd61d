"""One wait on a sweep's stop signal per event loop, however many of its batches it runs.

A Dask worker runs a batch per thread, all in its process's one event loop. Each batch
waiting on the sweep's terminate Event by itself would ask the scheduler once a second:
a worker of 32 threads, 32 requests a second, and a cluster of 100 such workers 3,200.
Here the batches of one loop that wait on the same signal share one wait: one of them
waits on the signal (polls its engine), the others wait for what it sees, and one of
them takes over within a second when the batch that waits ends first.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Awaitable, Callable

import anyio

_TAKE_OVER = 1.0
"""How long a batch waits for the one that waits before it looks again (s): how soon it
takes over when that batch ended."""


class _Wait:
    def __init__(self) -> None:
        self.seen = anyio.Event()
        self.waiting = False
        self.batches = 0


_waits: dict[tuple[int, bytes], _Wait] = {}


async def shared_wait(signal: bytes, wait: Callable[[], Awaitable[None]]) -> None:
    """Return once ``wait()`` has returned, in this batch or in another of this event loop
    waiting on the same ``signal`` (its identity, e.g. its encoded job field)."""
    key = (threading.get_ident(), signal)
    shared = _waits.setdefault(key, _Wait())
    shared.batches += 1
    try:
        while not shared.seen.is_set():
            if shared.waiting:
                with anyio.move_on_after(_TAKE_OVER):
                    await shared.seen.wait()
                continue
            shared.waiting = True
            try:
                await wait()
            finally:
                shared.waiting = False
            shared.seen.set()
    finally:
        shared.batches -= 1
        if not shared.batches:
            del _waits[key]


# A forked child has none of its parent's event loops.
os.register_at_fork(after_in_child=_waits.clear)
