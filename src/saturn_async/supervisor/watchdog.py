"""Runs die with their supervisor: a watchdog process that stops them when it dies.

Each :class:`~saturn_async.supervisor.Supervisor` starts one watchdog (``python -m
saturn_async.supervisor.watchdog_process GRACE ID``, :mod:`.watchdog_process`) in a
session of its own, so a signal to the supervisor's process group does not reach it, and
puts ``SATURN_WATCHDOG_ID=ID`` (random) in every run's environment. The supervisor keeps
the only write end of a pipe whose read end is the watchdog's stdin (close-on-exec, so no
run inherits it), and writes ``bye`` to it on a clean shutdown. The kernel closes the
write end however the supervisor ends, SIGKILL included. At end of file without ``bye``
the watchdog finds this user's live processes whose environment carries its id (every
run's processes, grandchildren included, also those that left the group) and stops their
process groups: TERM, KILL after GRACE seconds. Nothing is said per run, so the
supervisor's hot path pays nothing; a number reused by an unrelated process is never
signalled, since only processes carrying the id are looked for.

Supervisors that come and go in one long-lived process (a batch each, on a Dask or Ray
worker) share one watchdog per grace period instead (:func:`process_watchdog`): it
lives as long as the process, so a short batch does not pay for an interpreter's start.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
from collections.abc import Callable, Collection, Iterable

import anyio

from saturn_async.supervisor.process import group_has_live_members, stop_leftovers

ID_VARIABLE = "SATURN_WATCHDOG_ID"
"""Set in every run's environment: the id of the watchdog that stops it."""


class Watchdog:
    """The supervisor's side: starts the watchdog, notices its death, says bye."""

    def __init__(self, grace: float, report: Callable[[str], None]) -> None:
        """Start the watchdog. When it cannot be started (no fds, no processes), say so
        through ``report`` and carry on without it."""
        self._report = report
        self.id = os.urandom(8).hex()
        self.pid: int | None = None
        self._fd = -1
        self._pidfd: int | None = None
        self._closing = False
        try:
            read_end, write_end = os.pipe()  # both close-on-exec
        except OSError as exc:
            self._lost(f"could not start the watchdog ({exc.strerror})")
            return
        try:
            self.pid = os.posix_spawn(
                sys.executable,
                [sys.executable, "-m", f"{__package__}.watchdog_process", repr(grace), self.id],
                _environment(),
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, read_end, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                ],
                setsid=True,
                setsigdef=(signal.SIGINT, signal.SIGPIPE),
                setsigmask=(),
            )
            self._pidfd = os.pidfd_open(self.pid)
        except OSError as exc:
            os.close(write_end)
            self._lost(f"could not start the watchdog ({exc.strerror})")
            if self.pid is not None:  # no pidfd: it exits at once, having nothing to do
                os.waitpid(self.pid, 0)
                self.pid = None
        else:
            self._fd = write_end
        finally:
            os.close(read_end)

    async def watch(self) -> None:
        """Say so if the watchdog dies before :meth:`close` (run it in a task)."""
        if self._pidfd is not None:
            await anyio.wait_readable(self._pidfd)
            if not self._closing:
                self._lost(f"the watchdog (pid {self.pid}) is gone")

    def watch_from_thread(self) -> None:
        """:meth:`watch` from a daemon thread: for a watchdog shared by supervisors that
        come and go (one task waiting on its pidfd, whichever supervisor ends). Once it
        is gone and reaped, ``pid`` is None: :func:`process_watchdog` starts another."""
        if self._pidfd is not None and self.pid is not None:
            # A pidfd of the thread's own: close() may close ours while it waits.
            args = (os.dup(self._pidfd), self.pid)
            threading.Thread(target=self._wait, args=args, daemon=True).start()

    def _wait(self, pidfd: int, pid: int) -> None:
        try:
            select.select([pidfd], [], [])
        finally:
            os.close(pidfd)
        if not self._closing:
            self._lost(f"the watchdog (pid {pid}) is gone")
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self.pid = None

    def close(self) -> None:
        """Say bye: the watchdog then exits at once. It is reaped by a thread, so that
        a short batch does not wait for an interpreter's start."""
        self._closing = True
        if self._fd >= 0:
            with contextlib.suppress(OSError):  # it is gone; watch() said so
                os.write(self._fd, b"bye\n")
            os.close(self._fd)
            self._fd = -1
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        if self.pid is not None:
            threading.Thread(target=os.waitpid, args=(self.pid, 0), daemon=True).start()
            self.pid = None

    def _lost(self, what: str) -> None:
        self._report(f"{what}: if this process dies, its runs will not be stopped")


_shared: dict[float, Watchdog] = {}
_shared_lock = threading.Lock()


def process_watchdog(grace: float, report: Callable[[str], None]) -> Watchdog:
    """The watchdog shared by this process's supervisors of ``grace``, started on first
    use and never closed: it stops their runs if the process dies, and at its clean exit
    finds none left. Safe to call from several threads."""
    with _shared_lock:
        if grace not in _shared or _shared[grace].pid is None:
            _shared[grace] = Watchdog(grace, report)
            _shared[grace].watch_from_thread()
        return _shared[grace]


def _environment() -> dict[str, str]:
    """The watchdog's environment: ours, less names posix_spawn refuses (empty, or with
    ``=``, which a parent can hand us through execve), with this package importable."""
    env = {name: value for name, value in os.environ.items() if name and "=" not in name}
    env["PYTHONPATH"] = _package_path()
    return env


def _package_path() -> str:
    """PYTHONPATH for the watchdog: the directory holding this package, then the rest."""
    # This file is <root>/saturn_async/supervisor/watchdog.py (no import of the package
    # itself: it imports the supervisor back).
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    rest = os.environ.get("PYTHONPATH")
    return f"{root}{os.pathsep}{rest}" if rest else root


def groups_marked(variable: bytes, values: Collection[bytes]) -> set[int]:
    """The process groups of this user's live processes whose environment (as they were
    started) sets ``variable`` to one of ``values``. A process that exec'ed with an
    environment of its own, or whose environment we may not read (setuid), is not found."""
    needle = b"\0" + variable + b"="
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = b"\0" + f.read()
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # gone, or another user's
            continue
        start = environ.find(needle)
        if start < 0:
            continue
        start += len(needle)
        end = environ.find(b"\0", start)
        if environ[start : end if end >= 0 else None] not in values:
            continue
        state, _ppid, pgrp = stat[stat.rfind(b")") + 2 :].split(b" ", 3)[:3]
        if state != b"Z":
            found.add(int(pgrp))
    return found


async def stop_groups(groups: Iterable[int], grace: float) -> list[int]:
    """TERM each process group, KILL what is left after ``grace``; returns the groups
    with members left alive (survivors of SIGKILL: uninterruptible sleep)."""
    groups = list(groups)
    never = anyio.Event()
    async with anyio.create_task_group() as tg:
        for pgid in groups:
            tg.start_soon(stop_leftovers, pgid, grace, never)
    return [pgid for pgid in groups if group_has_live_members(pgid)]
