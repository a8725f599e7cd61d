"""Linux calls that Python's ``os`` module lacks, through ctypes on the running libc.

- :func:`punch_hole` frees a shipped range of a log file (``fallocate`` PUNCH_HOLE).
- :func:`prompt_scheduling` asks the kernel to give the calling thread, the supervisor's
  event loop, the CPU soon after it wakes (see docs/architecture.md, "Scheduling").

Both are best effort: where the kernel or the architecture lacks the call, nothing
changes and the caller carries on.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator

# The running process's own symbols, libc among them (no ldconfig lookup at start-up).
_libc = ctypes.CDLL(None, use_errno=True)

_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02


def punch_hole(fd: int, start: int, length: int) -> bool:
    """Free the disk blocks of a range of the file without changing its size."""
    flags = _FALLOC_FL_KEEP_SIZE | _FALLOC_FL_PUNCH_HOLE
    result: int = _libc.fallocate(fd, flags, ctypes.c_longlong(start), ctypes.c_longlong(length))
    return result == 0


# sched_setattr and sched_getattr, by architecture (glibc 2.36 has no wrappers).
_SCHED_SYSCALLS = {"x86_64": (314, 315), "aarch64": (274, 275), "riscv64": (274, 275)}
_SCHED_OTHER, _SCHED_BATCH = 0, 3
_SCHED_FLAG_RESET_ON_FORK = 0x01
PROMPT_SLICE_NS = 100_000
"""The time slice the loop asks for: the kernel's smallest (Linux 6.12+, EEVDF)."""


class _SchedAttr(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("sched_policy", ctypes.c_uint32),
        ("sched_flags", ctypes.c_uint64),
        ("sched_nice", ctypes.c_int32),
        ("sched_priority", ctypes.c_uint32),
        ("sched_runtime", ctypes.c_uint64),
        ("sched_deadline", ctypes.c_uint64),
        ("sched_period", ctypes.c_uint64),
        ("sched_util_min", ctypes.c_uint32),
        ("sched_util_max", ctypes.c_uint32),
    ]


def _sched_call(number: int, attr: _SchedAttr, *extra: int) -> bool:
    args = [ctypes.c_int(value) for value in extra]
    result: int = _libc.syscall(ctypes.c_long(number), ctypes.c_int(0), ctypes.byref(attr), *args)
    return result == 0


@contextlib.contextmanager
def prompt_scheduling() -> Iterator[None]:
    """While inside, the calling thread asks for the shortest time slice.

    A thread with a short slice gets the CPU soon after it wakes, without a larger share
    of it. It is set with SCHED_FLAG_RESET_ON_FORK, so every process the thread starts
    (every run) begins with the default slice. Nothing is done when the thread has a
    negative nice value or a real-time policy, which that flag would not pass on to the
    runs. The slice the thread had is restored on the way out; the flag stays (only a
    privileged thread may clear it), and with nice >= 0 and SCHED_OTHER or SCHED_BATCH
    it changes nothing else for children.
    """
    numbers = _SCHED_SYSCALLS.get(os.uname().machine)
    restore = _shorten_slice(*numbers) if numbers is not None else None
    try:
        yield
    finally:
        if numbers is not None and restore is not None:
            _sched_call(numbers[0], restore, 0)


def _shorten_slice(set_number: int, get_number: int) -> _SchedAttr | None:
    """Ask for the short slice; the attributes that undo it, or None when not taken."""
    before = _SchedAttr()
    if not _sched_call(get_number, before, ctypes.sizeof(before), 0):
        return None
    if before.sched_policy not in (_SCHED_OTHER, _SCHED_BATCH) or before.sched_nice < 0:
        return None
    attr = _SchedAttr(
        size=ctypes.sizeof(_SchedAttr),
        sched_policy=before.sched_policy,
        sched_flags=_SCHED_FLAG_RESET_ON_FORK,
        sched_nice=before.sched_nice,
        sched_runtime=PROMPT_SLICE_NS,
    )
    if not _sched_call(set_number, attr, 0):
        return None
    attr.sched_runtime = before.sched_runtime
    return attr
