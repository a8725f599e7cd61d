"""What the daemon knows of its batches and runs, rebuilt from the journal at start.

Every change is a journal record applied here, live and on replay alike, so the state
after a restart is the state the journal describes. Per run it keeps two bytes (a
status in an array); finished batches shrink to their counts.
"""

from __future__ import annotations

import time
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from saturn_async.daemon.journal import (
    Accept,
    AnyRecord,
    Cancel,
    Done,
    Finish,
    Header,
    Launch,
    Lost,
    Progress,
    Quarantine,
    Record,
    Start,
)
from saturn_async.daemon.protocol import BatchInfo
from saturn_async.spec.models import Batch
from saturn_async.storage.layout import Event

PENDING = -1
CANCELLED = -2
KEEP_DONE = 100
"""How many finished batches ``ps`` shows."""


@dataclass(slots=True)
class Attempt:
    """A run's attempt in flight (or, after a restart, that was in flight)."""

    index: int
    attempt: int
    rank: int
    pid: int = 0
    """0 until the spawn is journaled."""
    ticks: int = 0
    ticks_until: int = 0
    started: str = ""
    since: float = field(default_factory=time.monotonic)


class BatchState:
    def __init__(self, id: str, source: str, submitted: str, batch: Batch) -> None:
        self.id = id
        self.source = source
        self.submitted = submitted
        self.batch = batch
        self.statuses = array("h", [PENDING]) * len(batch.runs)
        self.running: dict[int, Attempt] = {}
        self.attempts: dict[int, int] = {}
        """The last attempt number of runs in flight or lost."""
        self.lost_events: dict[int, list[Event]] = {}
        self.lost = 0
        self.succeeded = self.failed = self.cancelled = 0
        self.quarantined: str | None = None
        """Why none of its runs start any more (see ``journal.Quarantine``)."""
        self._cursor = 0

    @property
    def total(self) -> int:
        return len(self.statuses)

    @property
    def queued(self) -> int:
        return self.total - self.succeeded - self.failed - self.cancelled - len(self.running)

    @property
    def finished(self) -> bool:
        return self.queued == 0 and not self.running

    def next_queued(self) -> int | None:
        """The first queued run not handed out yet (each index is handed out once)."""
        statuses, running = self.statuses, self.running
        while self._cursor < len(statuses):
            index = self._cursor
            self._cursor += 1
            if statuses[index] == PENDING and index not in running:
                return index
        return None

    def set_final(self, index: int, status: int) -> None:
        if status == CANCELLED:
            self.cancelled += 1
        elif status == 0:
            self.succeeded += 1
        else:
            self.failed += 1
        self.statuses[index] = max(min(status, 32767), CANCELLED)

    def run_id(self, index: int) -> str:
        return f"{self.id}.{index}"

    def info(self) -> BatchInfo:
        return BatchInfo(
            id=self.id,
            source=self.source,
            submitted=self.submitted,
            total=self.total,
            queued=self.queued,
            running=len(self.running),
            succeeded=self.succeeded,
            failed=self.failed,
            cancelled=self.cancelled,
            lost=self.lost,
            quarantined=self.quarantined,
        )


class DaemonState:
    def __init__(self) -> None:
        self.batches: dict[str, BatchState] = {}
        self.done: deque[BatchInfo] = deque(maxlen=KEEP_DONE)
        self.next_batch = 1
        self.succeeded = self.failed = 0
        self._dispatch: deque[BatchState] = deque()

    def new_batch_id(self) -> str:
        batch_id = f"b{self.next_batch}"
        self.next_batch += 1
        return batch_id

    @property
    def queued(self) -> int:
        """Runs that will start (not those of quarantined batches)."""
        return sum(b.queued for b in self.batches.values() if b.quarantined is None)

    def running(self) -> Iterator[tuple[BatchState, Attempt]]:
        for batch in self.batches.values():
            for attempt in batch.running.values():
                yield batch, attempt

    def next_run(self) -> tuple[BatchState, int] | None:
        """The next queued run in submission order, handed out once."""
        while self._dispatch:
            batch = self._dispatch[0]
            if batch.id in self.batches and batch.quarantined is None:
                index = batch.next_queued()
                if index is not None:
                    return batch, index
            self._dispatch.popleft()
        return None

    def apply(self, record: AnyRecord) -> None:
        match record:
            case Header():
                self.next_batch = max(self.next_batch, record.next_batch)
            case Accept():
                batch = BatchState(record.id, record.source, record.submitted, record.batch)
                self.batches[record.id] = batch
                self._dispatch.append(batch)
                self.next_batch = max(self.next_batch, int(record.id[1:]) + 1)
            case Launch():
                batch = self.batches[record.batch]
                batch.running[record.index] = Attempt(
                    record.index, record.attempt, record.rank, ticks=record.ticks
                )
                batch.attempts[record.index] = record.attempt
            case Start():
                batch = self.batches[record.batch]
                batch.running[record.index] = Attempt(
                    record.index,
                    record.attempt,
                    record.rank,
                    record.pid,
                    record.ticks,
                    record.ticks_until,
                    record.started,
                )
                batch.attempts[record.index] = record.attempt
            case Finish():
                batch = self.batches[record.batch]
                batch.running.pop(record.index, None)
                batch.attempts.pop(record.index, None)
                batch.lost_events.pop(record.index, None)
                batch.set_final(record.index, record.counted_status)
                if record.counted_status == 0:
                    self.succeeded += 1
                else:
                    self.failed += 1
                self._retire_if_finished(batch)
            case Lost():
                self._apply_lost(record)
            case Cancel():
                batch = self.batches[record.batch]
                indexes = range(batch.total) if record.index is None else (record.index,)
                for index in indexes:
                    if batch.statuses[index] == PENDING and index not in batch.running:
                        batch.set_final(index, CANCELLED)
                        batch.lost_events.pop(index, None)
                        batch.attempts.pop(index, None)
                self._retire_if_finished(batch)
            case Quarantine():
                self._apply_quarantine(record)
            case Progress():
                batch = self.batches[record.batch]
                for index, status in enumerate(record.statuses):
                    if status != PENDING:
                        batch.set_final(index, status)
                batch.lost = record.lost
                self._retire_if_finished(batch)
            case Done():
                self.done.append(record.info)

    def _apply_lost(self, record: Lost) -> None:
        batch = self.batches[record.batch]
        batch.running.pop(record.index, None)
        batch.attempts[record.index] = record.attempt
        batch.lost += 1
        event = Event(
            type="lost", utctimestamp=record.at, attempt=record.attempt, pid=record.pid or None
        )
        batch.lost_events.setdefault(record.index, []).append(event)

    def _apply_quarantine(self, record: Quarantine) -> None:
        batch = self.batches[record.batch]
        batch.quarantined = record.reason
        if record.index is not None:
            batch.running.pop(record.index, None)
        self._retire_if_finished(batch)

    def _retire_if_finished(self, batch: BatchState) -> None:
        if batch.finished:
            del self.batches[batch.id]
            self.done.append(batch.info())

    def snapshot(self) -> list[Record]:
        """Records that rebuild this state: what compaction writes."""
        records: list[Record] = [Header(next_batch=self.next_batch)]
        records.extend(Done(info=info) for info in self.done)
        for batch in self.batches.values():
            records.append(
                Accept(
                    id=batch.id, source=batch.source, submitted=batch.submitted, batch=batch.batch
                )
            )
            for index, events in batch.lost_events.items():
                for event in events:
                    assert event.attempt is not None
                    records.append(
                        Lost(
                            batch=batch.id,
                            index=index,
                            attempt=event.attempt,
                            pid=event.pid or 0,
                            at=event.utctimestamp,
                        )
                    )
            # After the Lost records: it sets the lost count they add to.
            records.append(
                Progress(batch=batch.id, statuses=batch.statuses.tolist(), lost=batch.lost)
            )
            if batch.quarantined is not None:
                records.append(Quarantine(batch=batch.id, reason=batch.quarantined))
            for a in batch.running.values():
                if not a.pid:
                    records.append(
                        Launch(
                            batch=batch.id,
                            index=a.index,
                            attempt=a.attempt,
                            rank=a.rank,
                            ticks=a.ticks,
                        )
                    )
                    continue
                records.append(
                    Start(
                        batch=batch.id,
                        index=a.index,
                        attempt=a.attempt,
                        rank=a.rank,
                        pid=a.pid,
                        ticks=a.ticks,
                        ticks_until=a.ticks_until,
                        started=a.started,
                    )
                )
        return records
