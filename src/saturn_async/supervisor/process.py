"""One run's process: spawned in its own session, waited on through a pidfd, reaped once.

The child's stdout and stderr are files the supervisor opened in the run's directory and
hands over with ``dup2`` (no pipe, no copy through Python), so a slow reader never blocks
it and a grandchild holding stdout open never keeps us waiting. Linux only: pidfds need
kernel 5.3 or later.
"""

from __future__ import annotations

import errno
import os
import resource
import shlex
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import anyio

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

    def __init__(
        self,
        cmd: str,
        env: dict[str, str],
        stdout: int,
        stderr: int,
        cwd: str | None = None,
        lease: int | None = None,
        prelude: str | None = None,
    ) -> None:
        """``stdout`` and ``stderr`` are fds (3 or above) the child gets as 1 and 2; the
        caller opened them and closes them. ``cwd``: the directory the command starts in
        (posix_spawn cannot change it, so the shell does, before the command). ``lease``,
        an fd holding the run's lease, is inherited by the child under the same number
        (see supervisor/lease.py). ``prelude``: shell text run first, in the run's own
        shell (joining its cgroup, see supervisor/memory_caps.py). Raises OSError or
        ValueError when the run cannot be started; then no process of it is left."""
        if cwd is not None:
            if not os.path.isdir(cwd):
                raise FileNotFoundError(errno.ENOENT, "working_dir: no such directory", cwd)
            cmd = f"cd -- {shlex.quote(cwd)} || exit 1; {cmd}"
        if prelude is not None:
            cmd = prelude + cmd
        self.started = time.monotonic()
        file_actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, stdout, 1),
            (os.POSIX_SPAWN_DUP2, stderr, 2),
        ]
        if lease is not None:  # dup2 onto itself clears close-on-exec (glibc 2.29+)
            file_actions.append((os.POSIX_SPAWN_DUP2, lease, lease))
        self.pid = os.posix_spawn(
            "/bin/sh",
            ["sh", "-c", cmd],
            env,
            file_actions=file_actions,
            setsid=True,
            setsigdef=_RESET_SIGNALS,
            setsigmask=(),
        )
        self.pgid = self.pid
        try:
            self._pidfd: int | None = os.pidfd_open(self.pid)
        except OSError:  # out of fds, say: a run we cannot wait for is not left running
            signal_group(self.pgid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            raise
        self.exit: Exit | None = None
        self._ended: anyio.Event | None = None
        self.terminated = False
        """Set when the supervisor stops this run because it is shutting down."""

    def signal_group(self, sig: int) -> bool:
        """Send ``sig`` to the run's process group; False when the group is gone."""
        return signal_group(self.pgid, sig)

    def stop(self, sig: int) -> None:
        """Signal the group because saturn is stopping the run (it counts as terminated)."""
        self.terminated = True
        self.signal_group(sig)

    async def reaped(self) -> bool:
        """Wait for the main process and reap it (for the one task that waits on it)."""
        await self.wait()
        return True

    async def ended(self) -> bool:
        """Wait until the task waiting on the main process has reaped it."""
        if self.exit is None:
            if self._ended is None:
                self._ended = anyio.Event()
            await self._ended.wait()
        return True

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
        if self._ended is not None:
            self._ended.set()

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


async def term_then_kill(
    send: Callable[[int], bool], gone: Callable[[], Awaitable[bool]], grace: float
) -> bool:
    """The one way saturn stops processes: SIGTERM, up to ``grace`` seconds for them to
    go, then SIGKILL.

    ``send(sig)`` signals them and returns False when none was there (then nothing more
    is done). ``gone()`` returns True once they are gone, or False to stop waiting early
    (a forced stop): SIGKILL follows at once. Returns False when SIGTERM reached none.
    """
    if not send(signal.SIGTERM):
        return False
    await kill_after(send, gone, grace)
    return True


async def kill_after(
    send: Callable[[int], object], gone: Callable[[], Awaitable[bool]], grace: float
) -> None:
    """The second half of :func:`term_then_kill`, for a caller that sent SIGTERM itself
    (at once, from a signal handler): SIGKILL unless ``gone()`` returns True in time."""
    with anyio.move_on_after(grace):
        if await gone():
            return
    send(signal.SIGKILL)


async def stop_leftovers(pgid: int, grace: float, forced: anyio.Event) -> bool:
    """After the leader's exit: TERM what is left of its group, KILL after ``grace``.

    Returns True when members were left over. Waiting ends early when ``forced`` is set.
    Gives up (leaving the group to init) if members survive SIGKILL for ``_KILL_WAIT``.
    """
    if not await term_then_kill(
        partial(signal_group, pgid), partial(_wait_group_gone, pgid, forced), grace
    ):
        return False
    with anyio.move_on_after(_KILL_WAIT):
        await _wait_group_gone(pgid, None)
    return True


async def _wait_group_gone(pgid: int, forced: anyio.Event | None) -> bool:
    """True once no live member is left; False as soon as ``forced`` is set."""
    delay = _POLL_FIRST
    while group_has_live_members(pgid):
        if forced is not None and forced.is_set():
            return False
        await anyio.sleep(delay)
        delay = min(delay * 2, _POLL_MAX)
    return True


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
