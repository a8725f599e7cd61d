"""Runs die with their supervisor: a watchdog process that stops them when it dies.

Each :class:`~saturn_async.supervisor.Supervisor` starts one watchdog (``python -m
saturn_async.supervisor.watchdog_process GRACE ID``) in its own session, so a signal to the
supervisor's process group does not reach it. The supervisor keeps the only write end of
a pipe whose read end is the watchdog's stdin (close-on-exec, so no run inherits it) and
writes one line per event: ``?`` right before a spawn, ``+PGID TICKS`` right after it
(TICKS: the leader's start time, 0 when unknown), ``!`` for a spawn that failed, ``-PGID``
once the group is gone, ``bye`` when it is done. The kernel closes the write end however
the supervisor ends, SIGKILL included. At end of file the watchdog TERMs every group still
registered (none after a clean shutdown), KILLs what is left after GRACE seconds, and
exits.

Between a spawn and its ``+`` line a run is not registered yet. When the supervisor died
there (a ``?`` is unanswered and no ``bye`` came), the watchdog also stops the groups of
the session leaders that carry ``SATURN_WATCHDOG_ID=ID`` in their environment (every run
does), which may include a run's own ``setsid`` descendant.

A group whose number now belongs to another leader (start time differs) is not
signalled: while any member of our group lives, the kernel does not hand its number
out again, so a different leader means ours is entirely gone.

This module is the supervisor's side and what the watchdog does at the end;
:mod:`.watchdog_process` is the watchdog, which imports nothing more until then.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Collection, Iterable

import anyio
import anyio.to_thread

import saturn_async
from saturn_async.supervisor.process import group_has_live_members, stop_leftovers

ID_VARIABLE = "SATURN_WATCHDOG_ID"
"""Set in every run's environment: the id of the watchdog that stops it."""


class Watchdog:
    """The supervisor's side: starts the watchdog and tells it about run groups."""

    def __init__(self, grace: float, report: Callable[[str], None]) -> None:
        """Start the watchdog; OSError when it cannot be started."""
        self._report = report
        self.id = os.urandom(8).hex()
        read_end, self._fd = os.pipe()  # both close-on-exec
        try:
            self.pid = os.posix_spawn(
                sys.executable,
                [sys.executable, "-m", f"{__package__}.watchdog_process", repr(grace), self.id],
                {**os.environ, "PYTHONPATH": _package_path()},
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, read_end, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                ],
                setsid=True,
                setsigdef=(signal.SIGINT, signal.SIGPIPE),
                setsigmask=(),
            )
        except BaseException:
            os.close(self._fd)
            raise
        finally:
            os.close(read_end)

    def expect(self) -> None:
        """A run is about to be spawned."""
        self._send(b"?\n")

    def failed(self) -> None:
        """The spawn announced by :meth:`expect` failed."""
        self._send(b"!\n")

    def register(self, pgid: int, ticks: int | None) -> None:
        """The run announced by :meth:`expect` leads process group ``pgid``."""
        self._send(b"+%d %d\n" % (pgid, ticks or 0))

    def unregister(self, pgid: int) -> None:
        self._send(b"-%d\n" % pgid)

    async def aclose(self) -> None:
        """Say bye and reap the watchdog, which exits at once when every group was
        unregistered."""
        self._send(b"bye\n")
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with anyio.CancelScope(shield=True):
            try:
                pidfd = os.pidfd_open(self.pid)
            except OSError:  # out of fds, say
                await anyio.to_thread.run_sync(os.waitpid, self.pid, 0)
                return
            try:
                await anyio.wait_readable(pidfd)
                self._reap()  # it has exited: this does not block
            finally:
                os.close(pidfd)

    def _reap(self) -> None:
        os.waitpid(self.pid, 0)

    def _send(self, line: bytes) -> None:
        if self._fd < 0:
            return
        try:
            os.write(self._fd, line)  # under PIPE_BUF: one atomic write
        except OSError as exc:
            os.close(self._fd)
            self._fd = -1
            self._report(
                f"the watchdog (pid {self.pid}) is gone ({exc.strerror}): if this process "
                "dies, its runs will not be stopped"
            )


def _package_path() -> str:
    """PYTHONPATH for the watchdog: the directory holding this package, then the rest."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(saturn_async.__file__)))
    rest = os.environ.get("PYTHONPATH")
    return f"{root}{os.pathsep}{rest}" if rest else root


def groups_marked(
    variable: bytes, values: Collection[bytes], *, leaders_only: bool = False
) -> set[int]:
    """The process groups of this user's live processes whose environment (as they were
    started) sets ``variable`` to one of ``values``; of session leaders only, if asked.
    A process that exec'ed with an environment of its own is not found."""
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
        state, _ppid, pgrp, session = stat[stat.rfind(b")") + 2 :].split(b" ", 4)[:4]
        if state != b"Z" and (not leaders_only or session == name.encode()):
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
