"""Read a run's log back: a plain local file, or numbered chunks reassembled in order.

Streamed: whatever the log's size, at most one piece (PIECE bytes) of it is in memory;
local files are read, and S3 objects fetched with ranged GETs, a piece at a time.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import anyio
import anyio.to_thread

from saturn_async.exceptions import InputError, NotRegularFile
from saturn_async.spec.paths import is_remote
from saturn_async.storage import storage_for
from saturn_async.storage.base import Storage
from saturn_async.storage.layout import FINAL_MARKERS, LOG, RUN_FILES, STDOUT
from saturn_async.storage.local import read_range

_POLL = 0.5
PIECE = 4 << 20
"""Bytes read and written at a time."""


async def copy_log(
    location: str, stream: str | None, write: Callable[[bytes], object], follow: bool
) -> None:
    """Write the run's ``stream`` to ``write``; with ``follow``, until its status appears.

    Without ``stream``: ``log`` when the run has one (the sweep layout), else ``stdout``.
    Without ``follow``, a location holding no run is an InputError (a mistyped path
    should not look like an empty log). So is asking a run that has one ``log`` for its
    ``stdout`` or ``stderr``: it has none, both went to ``log``.
    """
    async with storage_for(location) as storage:
        entries = await _entries(storage, location)
        if not follow and not entries & RUN_FILES:
            raise InputError(f"no run output at {location}", source="PATH_OR_URL")
        if stream is None:
            stream = LOG if LOG in entries else STDOUT
        elif stream != LOG and LOG in entries and stream not in entries:
            raise InputError(
                f"this run has no {stream}: its stdout and stderr are one log (a task of "
                "saturn run); use --stream log, or no --stream",
                source="--stream",
            )
        if is_remote(location):
            await _copy_chunks(storage, location, stream, write, follow)
        else:
            await _copy_file(location, stream, write, follow)


async def _copy_chunks(
    storage: Storage,
    location: str,
    stream: str,
    write: Callable[[bytes], object],
    follow: bool,
) -> None:
    printed: set[str] = set()
    while True:
        finished = follow and await _remote_finished(storage, location)
        chunks = [o for o in await storage.list(f"{location}/{stream}") if "/" not in o.name]
        for chunk in sorted(chunks, key=lambda o: _chunk_number(o.name)):
            if chunk.name not in printed:
                await _copy_object(storage, f"{location}/{stream}/{chunk.name}", chunk.size, write)
                printed.add(chunk.name)
        if not follow or finished:
            return
        await anyio.sleep(_POLL)


async def _copy_object(
    storage: Storage, location: str, size: int, write: Callable[[bytes], object]
) -> None:
    """A chunk is written once and never changes: read its ``size`` bytes a piece at a
    time."""
    for offset in range(0, size, PIECE):
        data = await storage.get_range(location, offset, PIECE)
        if not data:
            return
        write(data)


async def _entries(storage: Storage, location: str) -> set[str]:
    """The names directly inside ``location`` (a run's files and directories)."""
    if is_remote(location):
        return {o.name.split("/", 1)[0] for o in await storage.list(location)}
    try:
        return set(await anyio.to_thread.run_sync(os.listdir, location))
    except OSError:  # missing, not a directory, unreadable: no run to be found there
        return set()


async def _remote_finished(storage: Storage, location: str) -> bool:
    for marker in FINAL_MARKERS:
        if await storage.get(f"{location}/{marker}") is not None:
            return True
    return False


def _local_finished(location: str) -> bool:
    return any(os.access(os.path.join(location, marker), os.F_OK) for marker in FINAL_MARKERS)


def _chunk_number(name: str) -> tuple[int, str]:
    return (int(name), name) if name.isdigit() else (-1, name)


async def _copy_file(
    location: str, stream: str, write: Callable[[bytes], object], follow: bool
) -> None:
    path = os.path.join(location, stream)
    offset = 0
    while True:
        finished = follow and await anyio.to_thread.run_sync(_local_finished, location)
        while data := await anyio.to_thread.run_sync(_read_piece, path, offset):
            write(data)
            offset += len(data)
        if not follow or finished:
            return
        await anyio.sleep(_POLL)


def _read_piece(path: str, offset: int) -> bytes:
    try:
        return read_range(path, offset, PIECE)
    except FileNotFoundError:
        return b""
    except NotRegularFile as exc:
        raise InputError(
            f"is {exc.strerror}; saturn logs reads regular files", source=path
        ) from exc
