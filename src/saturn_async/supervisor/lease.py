"""One owner per run: the lease an attempt holds on its run's output location.

Every run takes an ``flock`` on :data:`LEASE` in the directory it writes into (its own
directory, or its staging directory when outputs are shipped) before its first attempt,
and lets go after its final status is recorded. The run's main process inherits the
locked fd, so the lock lives as long as any process of the attempt that kept it: a
SIGKILLed supervisor's runs keep their lease until they are gone. Runs with ``s3://``
outputs also hold a lease object (:mod:`saturn_async.supervisor.s3_lease`). The file
and the object hold their :class:`Holder` as JSON; on release the holder is kept with
``released`` set (a tombstone). See docs/storage.md, "Leases".
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import msgspec

from saturn_async.storage.layout import LEASE
from saturn_async.supervisor.process import start_ticks

_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_MAX = 4096
# A lock held while its recorded holder is dead: a reader of `saturn status` testing it
# (for microseconds), or a dead supervisor's run still alive. Looked at again this often.
_RECHECKS, _RECHECK_WAIT = 4, 0.005
# --wait-for-owner: how often to look again.
_WAIT_FIRST, _WAIT_MAX = 0.05, 2.0


class Holder(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Who holds (or held) a run's lease."""

    host: str
    pid: int
    start_ticks: int
    """When ``pid`` started (clock ticks since boot): a reused pid is not the holder."""
    boot_id: str
    started: float
    """When the lease was taken (Unix time)."""
    token: str | None = None
    """s3://: drawn anew for each taking, to tell this holder's writes from a rival's."""
    expires: float | None = None
    """s3://: the Unix time after which another host may take the lease over."""
    released: float | None = None
    """When the attempt's final status was recorded; the lease is free since."""
    given_back: bool = False
    """Let go without a final status (a requeue, a halt before the start): free, and the
    run is to run again."""

    @property
    def free(self) -> bool:
        """Whether nobody holds the lease any more (released or given back)."""
        return self.released is not None or self.given_back

    def describe(self) -> str:
        return f"host {self.host} pid {self.pid}"


UNKNOWN = Holder(host="unknown", pid=0, start_ticks=0, boot_id="", started=0.0)
"""The holder of a lock whose file could not be read (it was being written)."""
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Holder)


def encode(holder: Holder) -> bytes:
    return _encoder.encode(holder)


def decode(data: bytes | None) -> Holder | None:
    """The holder in ``data``, or None when there is none (empty, garbled)."""
    if not data:
        return None
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError:
        return None


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


@functools.cache
def _identity(pid: int) -> tuple[str, int, str]:
    """This host's name, the start time of process ``pid`` (us) and the boot id."""
    return socket.gethostname(), start_ticks(pid) or 0, boot_id()


def new_holder() -> Holder:
    """A holder naming this process, taken now."""
    pid = os.getpid()
    host, ticks, boot = _identity(pid)
    return Holder(host=host, pid=pid, start_ticks=ticks, boot_id=boot, started=time.time())


def holder_alive(holder: Holder) -> bool:
    """Whether ``holder`` still holds its lease: not released and, on this host, its
    process is there (same pid, same start time, same boot); on another host, its lease
    has not expired. A lease that names no expiry (a local one) is judged on this host
    only."""
    if holder.free:
        return False
    host, _ticks, boot = _identity(os.getpid())
    if holder.host == host:
        return holder.boot_id == boot and start_ticks(holder.pid) == holder.start_ticks
    return holder.expires is not None and time.time() < holder.expires


def _read(fd: int) -> bytes:
    return os.pread(fd, _READ_MAX, 0)


def _write(fd: int, data: bytes, size: int) -> None:
    """Replace the file's ``size`` bytes with ``data`` (a truncate only when shorter; and
    when ``size`` is what a read could hold at most, since the file may be longer)."""
    os.pwrite(fd, data, 0)
    if len(data) < size or size >= _READ_MAX:
        os.ftruncate(fd, len(data))


class LocalLease:
    """The flock on :data:`LEASE` in one directory."""

    def __init__(self) -> None:
        self.fd: int | None = None
        """The locked fd while held (the run's main process inherits it)."""
        self.previous = b""
        """What the file held when the lease was taken: a tombstone, a lost holder."""
        self._size = 0

    def try_acquire(self, dir_fd: int, holder: bytes) -> Holder | None:
        """Take the lease and write ``holder`` into it: None once taken, else who holds it.

        Raises OSError when the file cannot be opened.
        """
        fd = os.open(LEASE, _FLAGS, 0o644, dir_fd=dir_fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            found = decode(_read(fd))
            os.close(fd)
            return found or UNKNOWN
        except BaseException:
            os.close(fd)
            raise
        try:
            self.previous = _read(fd)
            _write(fd, holder, len(self.previous))
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self._size = len(holder)
        return None

    def release(self, content: bytes) -> None:
        """Write ``content`` (a tombstone, or what was there before) and let go."""
        if self.fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                _write(self.fd, content, self._size)
        finally:
            os.close(self.fd)
            self.fd = None


def lost_holder(run_dir: str) -> Holder | None:
    """The holder of a lost attempt in ``run_dir`` (a lease file not released whose lock
    nobody holds), or None. The lock is tested with a shared ``flock`` held for an
    instant; a supervisor taking the lease meanwhile looks again (see ``_RECHECKS``)."""
    try:
        fd = os.open(os.path.join(run_dir, LEASE), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        holder = decode(_read(fd))
        if holder is None or holder.free:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # held: the attempt (or a process of it) is alive
        return holder
    except OSError:
        return None
    finally:
        os.close(fd)


def lease_held(run_dir: str) -> bool:
    """Whether a live attempt holds the lease in ``run_dir`` (its lock is taken)."""
    try:
        fd = os.open(os.path.join(run_dir, LEASE), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


class RemoteLease(Protocol):
    """A lease object beside the run's outputs (``supervisor/s3_lease.py``'s S3Lease)."""

    previous: Holder | None

    async def try_acquire(self, holder: Holder) -> Holder | None: ...

    async def renew(self, report: Callable[[str], None]) -> None: ...

    async def release(self, finished: bool) -> None: ...


class RunLease:
    """A run's lease: the flock in the directory it writes into and, for s3:// outputs,
    the lease object. Taken before the first attempt, released after the final status."""

    def __init__(self, open_directory: Callable[[], int], remote: RemoteLease | None) -> None:
        """``open_directory()`` returns the fd of the directory the run writes into (the
        caller keeps it)."""
        self._open_directory = open_directory
        self.local = LocalLease()
        self.remote = remote
        self.previous: Holder | None = None
        """The holder before this one (a tombstone when the run finished before)."""
        self._holder: Holder | None = None

    @property
    def fd(self) -> int | None:
        return self.local.fd

    async def acquire(
        self, wait: bool, stop: anyio.Event, waiting: Callable[[Holder], None]
    ) -> Holder | None:
        """Take the lease: None once taken, else the live owner met (with ``wait``, only
        when ``stop`` is set while waiting; ``waiting(owner)`` is called when the wait
        begins). Raises OSError or StorageError."""
        holder = new_holder()
        delay, rechecks = _WAIT_FIRST, 0
        while True:
            owner = await self._try_acquire(holder)
            if owner is None:
                return None
            if not wait and (holder_alive(owner) or rechecks >= _RECHECKS):
                return owner
            rechecks += 1
            if rechecks == _RECHECKS + 1:
                waiting(owner)
            pause = _RECHECK_WAIT if rechecks <= _RECHECKS else delay
            if rechecks > _RECHECKS:
                delay = min(delay * 2, _WAIT_MAX)
            with anyio.move_on_after(pause):
                await stop.wait()
            if stop.is_set():
                return owner

    async def _try_acquire(self, holder: Holder) -> Holder | None:
        owner = self.local.try_acquire(self._open_directory(), encode(holder))
        if owner is not None:
            return owner
        self._holder = holder
        self.previous = decode(self.local.previous)
        if self.remote is None:
            return None
        try:
            owner = await self.remote.try_acquire(holder)
        except BaseException:
            self.local.release(self.local.previous)
            raise
        if owner is not None:
            self.local.release(self.local.previous)
            return owner
        self.previous = self.remote.previous
        return None

    def released_since(self, since: float) -> bool:
        """Whether the previous holder recorded a final status at ``since`` or later."""
        released = self.previous.released if self.previous is not None else None
        return released is not None and released >= since

    @contextlib.asynccontextmanager
    async def kept(self, report: Callable[[str], None]) -> AsyncIterator[None]:
        """Renew the lease object (s3://) while the body runs."""
        if self.remote is None:
            yield
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.remote.renew, report)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()

    async def release(self) -> None:
        """Let go after the final status is recorded, leaving a tombstone."""
        if self.local.fd is None:
            return
        if self.remote is not None:
            with anyio.CancelScope(shield=True):
                await self.remote.release(finished=True)
        assert self._holder is not None
        self.local.release(encode(msgspec.structs.replace(self._holder, released=time.time())))

    async def give_back(self) -> None:
        """Let go of a lease taken but not used, leaving what was there before."""
        if self.local.fd is None:
            return
        if self.remote is not None:
            with anyio.CancelScope(shield=True):
                await self.remote.release(finished=False)
        self.local.release(self.local.previous)

    def abandon(self) -> None:
        """Let go of the lock of an attempt abandoned before its final status: the lease
        stays as it is, and once this process is gone the attempt counts as lost."""
        if self.local.fd is not None:
            os.close(self.local.fd)
            self.local.fd = None


@dataclass
class MetOwners:
    """The runs a supervisor skipped for another's lease, for one line at the end."""

    owned: int = 0
    finished: int = 0
    owners: dict[str, None] = field(default_factory=dict)
    """The first few owners met, each once."""
    more_owners: bool = False
    waited: bool = False

    def waiting(self, owner: Holder, report: Callable[[str], None]) -> None:
        """Say (once) that runs are being waited for."""
        if not self.waited:
            self.waited = True
            report(f"waiting for runs whose lease another supervisor holds ({owner.describe()})")

    def add_owned(self, owner: Holder) -> None:
        self.owned += 1
        name = owner.describe()
        if len(self.owners) < 3:
            self.owners[name] = None
        elif name not in self.owners:
            self.more_owners = True

    def lines(self) -> list[str]:
        found = []
        if self.owned:
            more = ", ..." if self.more_owners else ""
            found.append(
                f"skipped {_runs(self.owned)} whose lease another supervisor holds "
                f"({', '.join(self.owners)}{more}); --wait-for-owner waits for them"
            )
        if self.finished:
            found.append(
                f"skipped {_runs(self.finished)} another supervisor finished while this one ran"
            )
        return found


def _runs(count: int) -> str:
    return f"{count} run" if count == 1 else f"{count} runs"
