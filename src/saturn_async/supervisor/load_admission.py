"""Load-aware starts: ``--memfree SIZE`` and ``--load N``.

Admission, not enforcement: before each run starts, the machine's MemAvailable
(``/proc/meminfo``) must be at least ``memfree`` and its 1-minute load average under
``load``; a run already running is never stopped for them. A reading is kept for
``_FRESH`` seconds, so a stream of starts reads ``/proc`` twice a second at most, and a
start waiting for the machine polls as often. Runs that pass together all start: a
reading does not know what they will take.

:func:`refusal` is the decision, pure; :class:`LoadAdmission` drives it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio

_FRESH = 0.5
"""Seconds a reading of memory and load is reused; also the poll while starts wait."""


@dataclass(frozen=True, slots=True)
class Reading:
    mem_available: int | None
    """Bytes (None where /proc/meminfo has no MemAvailable)."""
    load: float


def refusal(reading: Reading, memfree: int | None, load: float | None) -> str | None:
    """Why no run may start now, or None when one may."""
    available = reading.mem_available
    if memfree is not None and available is not None and available < memfree:
        return f"MemAvailable {_size(available)} is under --memfree {_size(memfree)}"
    if load is not None and reading.load >= load:
        return f"the 1-minute load {reading.load:.2f} is not under --load {load:g}"
    return None


def read_machine() -> Reading:
    return Reading(mem_available(), os.getloadavg()[0])


def mem_available() -> int | None:
    with open("/proc/meminfo", "rb") as meminfo:
        for line in meminfo:
            if line.startswith(b"MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def _size(count: int) -> str:
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if count >= 1 << shift:
            return f"{count / (1 << shift):.1f}{unit}"
    return str(count)


class LoadAdmission:
    """Waits, before a start, until :func:`refusal` says none; reports once per wait."""

    def __init__(
        self,
        memfree: int | None,
        load: float | None,
        report: Callable[[str], None],
        *,
        read: Callable[[], Reading] = read_machine,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.memfree = memfree
        self.load = load
        self.report = report
        self.waiting: str | None = None
        """Why starts wait now (for a display), or None."""
        self._read = read
        self._clock = clock
        self._reading: Reading | None = None
        self._read_at = 0.0

    def refused(self) -> str | None:
        now = self._clock()
        if self._reading is None or now - self._read_at >= _FRESH:
            self._reading = self._read()
            self._read_at = now
        return refusal(self._reading, self.memfree, self.load)

    async def wait(self, stopped: Callable[[], bool]) -> bool:
        """True once a run may start; False when ``stopped()`` turns true first."""
        while (reason := self.refused()) is not None:
            if self.waiting is None:
                self.report(f"starting no runs while {reason}; waiting")
            self.waiting = reason
            if stopped():
                return False
            await anyio.sleep(_FRESH)
        self.waiting = None
        return not stopped()
