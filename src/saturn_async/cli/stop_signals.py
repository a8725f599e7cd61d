"""The signals that stop ``saturn batch`` and ``saturn run``, and what each one does.

INT (Ctrl-C), TERM and HUP (a closed terminal, an ssh drop) stop gracefully: nothing new
starts, running runs get TERM, then KILL after the grace, and the exit code is 128 + the
first signal. QUIT (Ctrl-\\) stops at once: ``saturn batch`` treats it as a second
signal (KILL the runs now, stop retrying storage). A second signal of any kind skips
what is left of the grace (``saturn run`` stopping local runs ignores further signals: they
stop within the grace). No signal ends saturn with runs left running.

After a HUP the terminal is gone: writing to it fails (EIO), so stdout and stderr are
pointed at /dev/null when they are a terminal, and the stop goes on quietly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat

import anyio

from saturn_async.exceptions import StopRequested
from saturn_async.supervisor import Supervisor

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def raise_on_stop_signals() -> None:
    """From now on, outside a signal receiver, each of STOP_SIGNALS raises StopRequested
    (instead of ending the process with runs left behind)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise)


def ignore_stop_signals() -> None:
    """From now on STOP_SIGNALS do nothing (a stop is under way), except a HUP's
    leaving the terminal."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _ignore)


def signal_of(interrupt: KeyboardInterrupt) -> int:
    return interrupt.signum if isinstance(interrupt, StopRequested) else signal.SIGINT


def _raise(signum: int, frame: object) -> None:
    if signum == signal.SIGHUP:
        leave_terminal()
    raise StopRequested(signum)


def _ignore(signum: int, frame: object) -> None:
    if signum == signal.SIGHUP:
        leave_terminal()


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
