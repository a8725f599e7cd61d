"""Live counters of a supervisor, read by progress displays."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class RunningRun:
    label: str
    started: float


@dataclass(slots=True)
class FailedRun:
    path: str
    cmd: str
    status_code: int


@dataclass(slots=True)
class SweepProgress:
    """What succeeded, failed, was skipped and runs now. Only the supervisor writes it."""

    total: int
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    requeued: int = 0
    """Stopped for a requeue (``--requeue-on-term``): nothing recorded, to run again."""
    running: dict[int | str, RunningRun] = field(default_factory=dict)
    """Keyed by slot rank (a supervisor) or by task location (a client following a sweep)."""
    running_label: str = "slot"
    started: float = field(default_factory=time.monotonic)
    first_failures: list[FailedRun] = field(default_factory=list)
    keep_failures: int = 10

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.skipped

    @property
    def pending(self) -> int:
        return self.total - self.finished - self.requeued - len(self.running)

    def add_failure(self, failure: FailedRun) -> None:
        self.failed += 1
        if len(self.first_failures) < self.keep_failures:
            self.first_failures.append(failure)

    def rate(self) -> float:
        """Runs finished (not skipped) per second since the start."""
        elapsed = time.monotonic() - self.started
        done = self.succeeded + self.failed
        return done / elapsed if elapsed > 0 else 0.0

    def eta_seconds(self) -> float | None:
        rate = self.rate()
        return (self.pending + len(self.running)) / rate if rate > 0 else None
