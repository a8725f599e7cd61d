"""After a crash: stop what the previous incarnation left running, settle its attempts.

An attempt the journal shows in flight either recorded its final status before the
crash (the status is there, and its ``events`` name the journaled pid and attempt: it
is finished, and never run again) or did not (it is ``lost`` and runs again). Before
either is decided, its process group is stopped: the journal keeps the group's id and
its leader's start time, and every run carries ``SATURN_DAEMON_RUN_ID`` in its
environment, so a process is only signalled when it is provably one of ours.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

import anyio

from saturn_async.storage import Storage
from saturn_async.storage.layout import (
    ERROR,
    EVENTS,
    STATUS,
    STATUS_CODE,
    decode_events,
    parse_status,
)
from saturn_async.supervisor.process import start_ticks, term_then_kill

RUN_ID_VARIABLE = "SATURN_DAEMON_RUN_ID"
_POLL = 0.05
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def boot_ticks() -> int:
    """Now on the clock /proc measures process start times with (ticks since boot)."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * _CLOCK_TICKS)


def run_marker(state_dir: str, run_id: str) -> str:
    """The value of ``SATURN_DAEMON_RUN_ID`` for one run of the daemon at ``state_dir``."""
    return f"{state_dir}:{run_id}"


async def stop_previous_attempt(
    pgid: int, ticks: tuple[int, int], marker: str, grace: float
) -> int:
    """TERM, then after ``grace`` KILL, the processes left of an earlier attempt.

    Returns how many processes were found. The group is ours when its leader is alive
    with a start time in the journaled window ``ticks``; with the leader gone, a member
    is ours when it started after the window opened and carries the run's marker.
    ``pgid`` 0 (the crash came between the attempt's launch record and its spawn
    record): any process carrying the marker is ours.
    """
    found = _members(pgid, ticks, marker)

    def send(sig: int) -> bool:
        pids = found if sig == signal.SIGTERM else _members(pgid, ticks, marker)
        for pid in pids:
            _signal(pid, sig)
        return bool(pids)

    async def gone() -> bool:
        while _members(pgid, ticks, marker):  # noqa: ASYNC110 (no event tells of a pid's exit)
            await anyio.sleep(_POLL)
        return True

    await term_then_kill(send, gone, grace)
    return len(found)


def _members(pgid: int, ticks: tuple[int, int], marker: str) -> list[int]:
    earliest, latest = ticks[0] - 1, ticks[1] + 1  # either clock may round the other way
    leader_ticks = start_ticks(pgid) if pgid else None
    if leader_ticks is not None and not earliest <= leader_ticks <= latest:
        return []  # the id now names someone else's process
    ours = leader_ticks is not None
    needle = f"{RUN_ID_VARIABLE}={marker}\0".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if fields[0] == b"Z" or (pgid and int(fields[2]) != pgid) or int(fields[19]) < earliest:
            continue
        if ours or needle in _environ(pid):
            found.append(pid)
    return found


def _environ(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return b"\0" + f.read()
    except OSError:
        return b""


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


async def recorded_status(storage: Storage, location: str, pid: int, attempt: int) -> int | None:
    """The final status that attempt ``attempt`` (process ``pid``) recorded at
    ``location`` in ``storage``, if any."""
    if not pid:
        return None  # it never spawned
    marker = await storage.get(f"{location}/{STATUS_CODE}")
    status = await storage.get(f"{location}/{STATUS}") if marker is None else None
    error = await storage.get(f"{location}/{ERROR}") if status is not None else None
    code = parse_status(marker, status, error)
    if code is None:
        return None
    events = await storage.get(f"{location}/{EVENTS}")
    starts = [e for e in decode_events(events or b"") if e.type == "started"]
    if starts and starts[-1].pid == pid and starts[-1].attempt == attempt:
        return code
    return None
