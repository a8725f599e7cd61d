"""The daemon's journal: what it accepted and what became of each run, append-only.

One JSON object a line (``cat`` it to see what happened). A record is one ``write`` to a
file opened with O_APPEND, so a SIGKILLed daemon loses nothing it wrote; ``fsync``
(coalesced: one at a time, covering everything written before it started; the daemon
spaces them out) guards
against power loss. A write that fails (disk full) is cut back off the file and kept in
memory to be written again, so a torn line is only ever the last one, which reading
drops. Compaction rewrites the journal as a snapshot of what is still live, then
renames it over the old one; records written meanwhile go to both.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterable

import anyio
import anyio.to_thread
import msgspec

from saturn_async.daemon.protocol import BatchInfo
from saturn_async.exceptions import InputError
from saturn_async.spec.models import Batch


class Record(msgspec.Struct, tag_field="r", kw_only=True, omit_defaults=True):
    pass


class Header(Record, tag="header"):
    next_batch: int
    """The number of the next batch id (``b<N>``); ids are never reused."""


class Accept(Record, tag="accept"):
    id: str
    source: str
    submitted: str
    batch: Batch


class Launch(Record, tag="launch"):
    """An attempt about to spawn: journaled first, so no attempt runs unrecorded."""

    batch: str
    index: int
    attempt: int
    rank: int
    ticks: int
    """The boot clock (in clock ticks, as /proc reports process start times) before the
    spawn: no process of the attempt started earlier."""


class Start(Record, tag="start"):
    """The attempt's process, right after the spawn."""

    batch: str
    index: int
    attempt: int
    rank: int
    pid: int
    """Also the run's process group id (each run leads its own session)."""
    ticks: int
    ticks_until: int
    """The leader started between ``ticks`` (before the spawn) and this (after it): with
    ``pid`` that names the group safely, since a reused pid has another start time. Read
    from the clock, not from /proc, which costs hundreds of µs right after a spawn."""
    started: str


class Finish(Record, tag="finish"):
    batch: str
    index: int
    status: int
    recorded: bool = True
    """False when the status could not be written to the run's outputs."""

    @property
    def counted_status(self) -> int:
        """The status the daemon counts: a run succeeded only when its status was
        recorded (a 0 that could not be written counts as a failure, 1)."""
        return self.status if self.recorded or self.status else 1


class Lost(Record, tag="lost"):
    batch: str
    index: int
    attempt: int
    pid: int
    at: str


class Cancel(Record, tag="cancel"):
    batch: str
    index: int | None = None
    """None: every queued run of the batch."""


class Quarantine(Record, tag="quarantine"):
    """A batch whose replay failed, or one of whose runs failed to start in a way the
    run could not record: none of its runs start any more (it waits for a cancel)."""

    batch: str
    reason: str
    index: int | None = None
    """The run whose start failed: no longer in flight, and left queued."""


class Progress(Record, tag="progress"):
    """A snapshot of a live batch's runs: status per index, -1 pending, -2 cancelled."""

    batch: str
    statuses: list[int]
    lost: int = 0


class Done(Record, tag="done"):
    """A finished batch, kept for ``ps`` after compaction."""

    info: BatchInfo


AnyRecord = Header | Accept | Launch | Start | Finish | Lost | Cancel | Quarantine | Progress | Done
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyRecord)


def encode(record: Record) -> bytes:
    return _encoder.encode(record) + b"\n"


def read_journal(path: str) -> list[AnyRecord]:
    """Every complete record of the journal at ``path`` (none when it does not exist)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    lines.pop()  # after the last newline: empty, or a torn last record
    records: list[AnyRecord] = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(_decoder.decode(line))
        except msgspec.DecodeError as exc:
            raise InputError(f"line {number} is not a journal record: {exc}", source=path) from exc
    return records


def lock_state_dir(state_dir: str, lock_path: str) -> int:
    """Hold the state directory for this process (an flock released at exit)."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise InputError(f"in use by daemon pid {holder}", source=state_dir) from None
    os.ftruncate(fd, 0)
    os.write(fd, b"%d\n" % os.getpid())
    return fd


class Journal:
    """Appends records to the journal file; see the module docstring."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.size = os.fstat(self._fd).st_size
        self.unwritten: list[bytes] = []
        """Records a failed write left behind, in order; written before any new one."""
        self.error: OSError | None = None
        self._copy: list[bytes] | None = None
        self._written = 0
        self._synced = 0
        self._syncing: anyio.Event | None = None

    def append(self, record: Record) -> None:
        data = encode(record)
        if self._copy is not None:
            self._copy.append(data)
        self.unwritten.append(data)
        self.write_unwritten()

    def write_unwritten(self) -> bool:
        """Write what is waiting; False (and ``error`` set) when the disk refuses."""
        while self.unwritten:
            data = self.unwritten[0]
            try:
                written = os.write(self._fd, data)
                if written != len(data):
                    raise OSError(errno.ENOSPC, "short write (disk full?)")
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self.size)
                self.error = exc
                return False
            self.size += written
            self._written += 1
            self.unwritten.pop(0)
        self.error = None
        return True

    async def sync(self) -> None:
        """Return once everything written so far is on disk (one fsync at a time)."""
        target = self._written
        while self._synced < target:
            if self._syncing is not None:
                await self._syncing.wait()
                continue
            self._syncing = anyio.Event()
            covered = self._written
            try:
                await anyio.to_thread.run_sync(os.fsync, self._fd)
                self._synced = covered
            finally:
                self._syncing.set()
                self._syncing = None

    async def compact(self, snapshot: Iterable[Record]) -> None:
        """Replace the journal by ``snapshot`` plus whatever is appended meanwhile.

        Only while nothing is waiting to be written: then every record that fails to
        reach the old file meanwhile is in the new one.
        """
        assert not self.unwritten
        data = b"".join(encode(r) for r in snapshot)
        self._copy = []
        new_path = self.path + ".new"
        try:
            await anyio.to_thread.run_sync(_write_synced, new_path, data)
            fd = os.open(new_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            tail = b"".join(self._copy)
            try:
                if os.write(fd, tail) != len(tail):
                    raise OSError(errno.ENOSPC, "short write (disk full?)")
                os.replace(new_path, self.path)
            except OSError:
                os.close(fd)
                raise
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(new_path)
            self.error = exc
            return
        finally:
            self._copy = None
        os.close(self._fd)
        self._fd = fd
        self.unwritten.clear()
        self.error = None
        self.size = len(data) + len(tail)
        self._written += 1
        await self.sync()
        await anyio.to_thread.run_sync(_sync_directory, os.path.dirname(self.path))

    def close(self) -> None:
        os.close(self._fd)


def _write_synced(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
