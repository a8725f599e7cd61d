"""One run's process: spawned in its own session, waited on through a pidfd, reaped once.

The child's stdout and stderr are opened by the kernel straight onto files (no pipe, no
copy through Python), so a slow reader never blocks it and a grandchild holding stdout
open never keeps us waiting. Linux only: pidfds need kernel 5.3 or later.
"""

from __future__ import annotations

import os
import resource
import signal
import time
from dataclasses import dataclass

import anyio

_OUT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
# Python ignores SIGPIPE and SIGXFSZ; an ignored disposition survives exec, so reset them.
_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
# How often to look whether a process group still has members once its leader is gone.
_POLL_FIRST, _POLL_MAX = 0.005, 0.1
# How long to wait for a process group to vanish after SIGKILL before giving up on it.
_KILL_WAIT = 5.0


@dataclass(frozen=True, slots=True)
class Exit:
    """How a run's main process ended."""

    status: int
    """The exit status as a shell reports it: 0-255, or 128+N when killed by signal N."""
    signal: int | None
    wall_seconds: float
    rusage: resource.struct_rusage


class RunProcess:
    """A spawned ``sh -c CMD``: leader of its own session and process group."""

    def __init__(self, cmd: str, env: dict[str, str], stdout: str, stderr: str) -> None:
        self.started = time.monotonic()
        self.pid = os.posix_spawn(
            "/bin/sh",
            ["sh", "-c", cmd],
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, stdout, _OUT_FLAGS, 0o644),
                # One file for both: one open file description, so writes interleave in order.
                (os.POSIX_SPAWN_DUP2, 1, 2)
                if stderr == stdout
                else (os.POSIX_SPAWN_OPEN, 2, stderr, _OUT_FLAGS, 0o644),
            ],
            setsid=True,
            setsigdef=_RESET_SIGNALS,
            setsigmask=(),
        )
        self.pgid = self.pid
        self._pidfd: int | None = os.pidfd_open(self.pid)
        self.exit: Exit | None = None
        self.terminated = False
        """Set when the supervisor stops this run because it is shutting down."""

    def signal_group(self, sig: int) -> bool:
        """Send ``sig`` to the run's process group; False when the group is gone."""
        return signal_group(self.pgid, sig)

    async def wait(self) -> Exit:
        """Wait for the main process to exit and reap it (idempotent)."""
        if self.exit is None:
            assert self._pidfd is not None
            await anyio.wait_readable(self._pidfd)
            self._reap()
        assert self.exit is not None
        return self.exit

    def _reap(self) -> None:
        _, status, rusage = os.wait4(self.pid, 0)
        wall = time.monotonic() - self.started
        code = os.waitstatus_to_exitcode(status)
        sig = -code if code < 0 else None
        self.exit = Exit(128 + sig if sig else code, sig, wall, rusage)
        self.close()

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    async def kill_and_reap(self) -> None:
        """Last resort on cancellation or error: SIGKILL the group and reap the leader."""
        if self.exit is None:
            self.signal_group(signal.SIGKILL)
            with anyio.CancelScope(shield=True):
                await self.wait()


def signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a member changed its credentials; it still exists
    return True


async def stop_leftovers(pgid: int, grace: float, forced: anyio.Event) -> bool:
    """After the leader's exit: TERM what is left of its group, KILL after ``grace``.

    Returns True when members were left over. Waiting ends early when ``forced`` is set.
    Gives up (leaving the group to init) if members survive SIGKILL for ``_KILL_WAIT``.
    """
    if not signal_group(pgid, signal.SIGTERM):
        return False
    with anyio.move_on_after(grace):
        await _wait_group_gone(pgid, forced)
    if signal_group(pgid, signal.SIGKILL):
        with anyio.move_on_after(_KILL_WAIT):
            await _wait_group_gone(pgid, None)
    return True


async def _wait_group_gone(pgid: int, forced: anyio.Event | None) -> None:
    delay = _POLL_FIRST
    while group_has_live_members(pgid) and not (forced and forced.is_set()):
        await anyio.sleep(delay)
        delay = min(delay * 2, _POLL_MAX)


def group_has_live_members(pgid: int) -> bool:
    """True while the group has a member that is not a zombie.

    Members orphaned by the run's exit are reaped by init, which some containers do
    slowly or never; a zombie holds no resources and is not waited for.
    """
    if not signal_group(pgid, 0):
        return False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        state, _ppid, pgrp = stat[stat.rfind(b")") + 2 :].split(b" ", 3)[:3]
        if int(pgrp) == pgid and state != b"Z":
            return True
    return False


def start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), or None when it is gone.

    With the pid it identifies a process safely: a reused pid has another start time.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[19]) if fields[0] != b"Z" else None
