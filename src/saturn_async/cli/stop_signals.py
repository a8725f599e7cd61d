"""The signals that stop ``saturn batch`` and ``saturn run``, and what each one does.

INT (Ctrl-C), TERM and HUP (a closed terminal, an ssh drop) stop gracefully: nothing new
starts, running runs get TERM, then KILL after the grace, and the exit code is 128 + the
first signal. QUIT (Ctrl-\\) stops at once: ``saturn batch`` treats it as a second
signal (KILL the runs now, stop retrying storage). A second signal of any kind skips
what is left of the grace (``saturn run`` stopping local runs ignores further signals: they
stop within the grace). No signal ends saturn with runs left running: ``saturn run``
receives them from the start of its one event loop, before anything is dispatched.

After a HUP the terminal is gone: writing to it fails (EIO), so stdout and stderr are
pointed at /dev/null when they are a terminal, and the stop goes on quietly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
from collections.abc import AsyncIterator, Iterator

import anyio
import anyio.abc

from saturn_async.supervisor import Supervisor

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class StopSignals:
    """The stop signals of a command that runs in one event loop (``saturn run``,
    ``collect``): the first cancels the scopes made by :meth:`scope` and is kept in
    ``signum``; later ones do nothing (a stop is under way), except a HUP's leaving the
    terminal. Made by :func:`receive_stop_signals`."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._scopes: list[anyio.CancelScope] = []

    @contextlib.contextmanager
    def scope(self) -> Iterator[anyio.CancelScope]:
        """A cancel scope the first stop signal cancels (at once if one came already)."""
        with anyio.CancelScope() as scope:
            if self.signum is not None:
                scope.cancel()
            self._scopes.append(scope)
            try:
                yield scope
            finally:
                self._scopes.remove(scope)

    async def _receive(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    leave_terminal()
                if self.signum is None:
                    self.signum = signum
                    for scope in self._scopes:
                        scope.cancel()


@contextlib.asynccontextmanager
async def receive_stop_signals() -> AsyncIterator[StopSignals]:
    """Receive STOP_SIGNALS until the block ends; the receiver is in place on entry, so
    nothing the block starts can be left behind by a signal that ends the process."""
    stops = StopSignals()
    async with anyio.create_task_group() as tg:
        await tg.start(stops._receive)
        try:
            yield stops
        finally:
            tg.cancel_scope.cancel()


async def forward_stop_signals(supervisor: Supervisor) -> None:
    """Stop ``supervisor`` on each of STOP_SIGNALS, until cancelled."""
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                leave_terminal()
            supervisor.stop(signum)
            if signum == signal.SIGQUIT:
                supervisor.stop(signum)  # at once: as a second signal


def leave_terminal() -> None:
    """Point stdout and stderr at /dev/null where they are a terminal (character device);
    files and pipes keep what is written."""
    null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    try:
        for fd in (1, 2):
            with contextlib.suppress(OSError):  # not open
                if stat.S_ISCHR(os.fstat(fd).st_mode):
                    os.dup2(null, fd)
    finally:
        os.close(null)
