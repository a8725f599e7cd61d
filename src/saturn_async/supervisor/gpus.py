"""A GPU pool shared by every supervisor in one process: distinct devices per run.

A run takes its devices before it starts and gives them back when it has its final
status; no device is held by two runs at once. The policy is strict first come, first
served: a run that does not fit waits, and every run that asks after it waits behind
it even when it would fit, so a run of 2 GPUs is never starved by a stream of runs of 1
(at the cost of leaving devices idle while the first in line waits for its share).

Supervisors on other threads (a Dask worker's batches) share the pool: a waiter is woken
on its own event loop (``call_soon_threadsafe``), so waiting costs no thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Sequence

import anyio

# How often a waiting run checks whether its supervisor stopped.
_STOP_POLL = 0.5


class _Waiter:
    __slots__ = ("count", "devices", "granted", "loop")

    def __init__(self, count: int) -> None:
        self.count = count
        self.devices: tuple[str, ...] | None = None
        self.granted = anyio.Event()
        self.loop = asyncio.get_running_loop()


class GpuPool:
    def __init__(self, devices: Sequence[str]) -> None:
        self.devices = tuple(devices)
        self._order = {device: index for index, device in enumerate(self.devices)}
        self._free = list(self.devices)
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()

    @property
    def size(self) -> int:
        return len(self.devices)

    async def acquire(self, count: int, stopped: Callable[[], bool]) -> tuple[str, ...] | None:
        """``count`` distinct devices, once it is this request's turn and they are free;
        None when ``stopped()`` turns true first. ``count`` must not exceed the pool."""
        assert count <= self.size, "requests are checked against the pool before they run"
        with self._lock:
            if not self._waiters and len(self._free) >= count:
                return self._take(count)
            waiter = _Waiter(count)
            self._waiters.append(waiter)
        try:
            while not waiter.granted.is_set():
                with anyio.move_on_after(_STOP_POLL):
                    await waiter.granted.wait()
                if not waiter.granted.is_set() and stopped():
                    self._withdraw(waiter)
                    return None
        except BaseException:  # cancelled
            self._withdraw(waiter)
            raise
        return waiter.devices

    def release(self, devices: tuple[str, ...]) -> None:
        if not devices:
            return
        with self._lock:
            self._free.extend(devices)
            self._free.sort(key=self._order.__getitem__)
            self._grant()

    def _withdraw(self, waiter: _Waiter) -> None:
        """Take ``waiter`` out of the line; devices granted to it meanwhile go back."""
        with self._lock:
            if waiter.devices is None:
                self._waiters.remove(waiter)
            else:
                self._free.extend(waiter.devices)
                self._free.sort(key=self._order.__getitem__)
            self._grant()

    def _take(self, count: int) -> tuple[str, ...]:
        taken = tuple(self._free[:count])
        del self._free[:count]
        return taken

    def _grant(self) -> None:
        """Hand free devices to the waiters in line, first first (under the lock)."""
        while self._waiters and len(self._free) >= self._waiters[0].count:
            waiter = self._waiters.popleft()
            waiter.devices = self._take(waiter.count)
            _wake(waiter)


def _wake(waiter: _Waiter) -> None:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is waiter.loop:
        waiter.granted.set()
    else:
        waiter.loop.call_soon_threadsafe(waiter.granted.set)


_lock = threading.Lock()
_process_pools: dict[tuple[str, ...], GpuPool] = {}


def process_gpus(devices: Sequence[str]) -> GpuPool:
    """The process's pool of ``devices``, created on first use (every supervisor of the
    process asking for the same devices shares it)."""
    with _lock:
        return _process_pools.setdefault(tuple(devices), GpuPool(devices))
