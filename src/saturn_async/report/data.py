"""What ``saturn report`` shows, gathered from the runs' outputs and aggregated.

Each run costs one read of its status and one of its ``events``; only the runs a failure
group shows have their stderr read (its last 4 KiB). What is kept per attempt is a few
numbers, so 100,000 runs fit in a few tens of MB.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from saturn_async.runs_index import RunRef
from saturn_async.storage.layout import EVENTS, Event, decode_events, epoch_of
from saturn_async.storage.local import read_regular, read_status_code
from saturn_async.storage.results_walk import open_regular, read_at

MAX_BARS = 3000
"""Attempts drawn as bars on the timeline; past this, it is aggregated into cells (the
page says so)."""
SHOWN_PER_FAILURE = 10
"""Runs listed under each exit code, with the last lines of their stderr."""
TAIL_BYTES = 4096
TAIL_LINES = 8
TOP_MEMORY = 10
OUTCOMES = ("complete", "failed", "timeout", "terminated", "not started")
"""Attempt outcomes, as their end events name them; ``not started``: could not start."""


@dataclass(slots=True)
class Attempt:
    slot: int
    start: float
    """Epoch seconds."""
    seconds: float
    outcome: str


@dataclass(slots=True)
class Usage:
    """A run's peak memory (the largest of its attempts') and CPU (all attempts)."""

    max_rss_kib: int
    cpu_seconds: float
    location: str
    cmd: str
    wall_seconds: float = 0.0
    """All attempts'."""
    bounded: bool = False
    """True when ``max_rss_kib`` is only a bound on the peak (``max_rss_at_most_kib``)."""


@dataclass(slots=True)
class FailedRun:
    location: str
    cmd: str
    stderr_tail: str


@dataclass(slots=True)
class FailureGroup:
    exit_code: int
    count: int = 0
    shown: list[FailedRun] = field(default_factory=list)


@dataclass(slots=True)
class ReportData:
    title: str
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    not_finished: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    usage: list[Usage] = field(default_factory=list)
    failures: dict[int, FailureGroup] = field(default_factory=dict)

    @property
    def attempt_count(self) -> int:
        return len(self.attempts)

    def top_memory(self) -> list[Usage]:
        return sorted(self.usage, key=lambda u: u.max_rss_kib, reverse=True)[:TOP_MEMORY]


def gather(title: str, runs: Sequence[RunRef]) -> ReportData:
    """Read the outputs of local ``runs`` (see :func:`saturn_async.runs_index.runs_of`)."""
    data = ReportData(title)
    for location, known_cmd, layout in runs:
        data.total += 1
        code = read_status_code(location)
        if code is None:
            data.not_finished += 1
            continue
        events = _events(location)
        cmd = known_cmd or next((e.cmd for e in events if e.cmd), None) or ""
        _add_attempts(data, events, location, cmd)
        if code == 0:
            data.succeeded += 1
            continue
        data.failed += 1
        group = data.failures.setdefault(code, FailureGroup(code))
        group.count += 1
        if len(group.shown) < SHOWN_PER_FAILURE:
            group.shown.append(FailedRun(location, cmd, _tail(location, layout.stderr)))
    return data


def _add_attempts(data: ReportData, events: list[Event], location: str, cmd: str) -> None:
    started: dict[int, Event] = {}
    rss, cpu, wall, measured, bounded = 0, 0.0, 0.0, False, False
    for event in events:
        if event.type == "started" and event.attempt is not None:
            started[event.attempt] = event
        elif event.exit_code is not None and event.type in OUTCOMES:
            begin = started.get(event.attempt or 1)
            seconds = event.wall_seconds or 0.0
            start = (
                epoch_of(begin.utctimestamp) if begin else epoch_of(event.utctimestamp) - seconds
            )
            slot = begin.rank if begin and begin.rank is not None else 0
            data.attempts.append(Attempt(slot, start, seconds, event.type))
            if event.peak_kib is not None:
                measured = True
                bounded = bounded or event.max_rss_kib is None
                rss = max(rss, event.peak_kib)
                cpu += (event.cpu_user_seconds or 0.0) + (event.cpu_system_seconds or 0.0)
                wall += seconds
        elif event.type == "failed" and event.attempt is not None:  # could not start
            data.attempts.append(Attempt(0, epoch_of(event.utctimestamp), 0.0, "not started"))
    if measured:
        data.usage.append(Usage(rss, cpu, location, cmd, wall, bounded))


def _events(location: str) -> list[Event]:
    try:
        return decode_events(read_regular(os.path.join(location, EVENTS)))
    except (OSError, ValueError):
        return []


def _tail(location: str, name: str) -> str:
    """The last lines of a run's stderr (the sweep layout's ``log``), as text."""
    try:
        fd, size = open_regular(os.path.join(location, name))
    except OSError:
        return ""
    try:
        data = read_at(fd, max(0, size - TAIL_BYTES), TAIL_BYTES)
    except OSError:
        return ""
    finally:
        os.close(fd)
    return "\n".join(data.decode(errors="replace").splitlines()[-TAIL_LINES:])
