"""Retrying transient failures: exponential backoff with jitter, up to a deadline."""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

T = TypeVar("T")


class Backoff:
    """Delays of ``first * factor**n`` seconds capped at ``cap``, each jittered to 50-100%
    (storage's retries, and those of runs: supervisor/retrying.py)."""

    def __init__(self, first: float = 0.1, cap: float = 10.0, factor: float = 2.0) -> None:
        self.first = first
        self.cap = cap
        self.factor = factor
        self.failures = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.first * self.factor**self.failures)
        self.failures += 1
        return random.uniform(ceiling / 2, ceiling)


async def retry_transient(
    attempt: Callable[[], Awaitable[T]],
    is_transient: Callable[[BaseException], bool],
    deadline: float,
    backoff: Backoff | None = None,
    abandon: anyio.Event | None = None,
) -> T:
    """Await ``attempt()`` until it succeeds; retry errors ``is_transient`` accepts.

    Gives up after ``deadline`` seconds, or as soon as ``abandon`` is set, re-raising the
    last error. Other errors pass.
    """
    backoff = backoff or Backoff()
    abandon = abandon or anyio.Event()
    give_up = time.monotonic() + deadline
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if not is_transient(exc):
                raise
            delay = backoff.next_delay()
            if abandon.is_set() or time.monotonic() + delay > give_up:
                raise
            with anyio.move_on_after(delay):
                await abandon.wait()
            if abandon.is_set():
                raise
