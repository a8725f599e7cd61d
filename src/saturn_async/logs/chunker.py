"""Where to cut a growing log into chunks: pure logic, no I/O.

A chunk covers bytes ``[start, end)`` of the local file and is named by its sequence
number. A chunk is cut when ``interval`` seconds have passed since the last cut and there
is something new, as soon as ``cap`` new bytes are waiting, and for whatever is left at
the end. Chunks never overlap and never repeat, so no object is written twice.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Chunk:
    seq: int
    start: int
    end: int


class ChunkCursor:
    """Tracks how much of one log has been cut into chunks."""

    def __init__(self, interval: float, cap: int, now: float) -> None:
        if interval <= 0 or cap <= 0:
            raise ValueError("interval and cap must be positive")
        self.interval = interval
        self.cap = cap
        self.offset = 0
        self.seq = 0
        self._due = now + interval

    def next_chunk(self, size: int, now: float, final: bool = False) -> Chunk | None:
        """The next chunk to ship given the file's ``size`` at ``now``, or None.

        Call again after each chunk: a large backlog comes out as several capped chunks.
        A file that shrank (truncated by its writer) yields nothing until it grows past
        what was shipped.
        """
        waiting = size - self.offset
        if waiting <= 0:
            if now >= self._due:
                self._due = now + self.interval
            return None
        if waiting >= self.cap:
            end = self.offset + self.cap
        elif final or now >= self._due:
            end = size
        else:
            return None
        chunk = Chunk(self.seq, self.offset, end)
        self.seq += 1
        self.offset = end
        self._due = now + self.interval
        return chunk

    def seconds_until_due(self, now: float) -> float:
        return max(0.0, self._due - now)
