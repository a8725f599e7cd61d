"""Read a run's log back: a plain local file, or numbered chunks reassembled in order."""

from __future__ import annotations

import os
from collections.abc import Callable

import anyio
import anyio.to_thread

from saturn_async.exceptions import InputError
from saturn_async.spec.paths import is_remote
from saturn_async.storage import storage_for
from saturn_async.storage.base import Storage
from saturn_async.storage.layout import FINAL_MARKERS, LOG, STDOUT

_POLL = 0.5


async def copy_log(
    location: str, stream: str | None, write: Callable[[bytes], object], follow: bool
) -> None:
    """Write the run's ``stream`` to ``write``; with ``follow``, until its status appears.

    Without ``stream``: ``log`` when the run has one (the sweep layout), else ``stdout``.
    Without ``follow``, a location holding nothing at all is an InputError (a mistyped
    path should not look like an empty log).
    """
    async with storage_for(location) as storage:
        if not follow and not await _exists(storage, location):
            raise InputError(f"no run output at {location}", source="PATH_OR_URL")
        if stream is None:
            stream = LOG if await _has_log(storage, location) else STDOUT
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
        chunks = [o.name for o in await storage.list(f"{location}/{stream}") if "/" not in o.name]
        for name in sorted(chunks, key=_chunk_number):
            if name not in printed:
                data = await storage.get(f"{location}/{stream}/{name}")
                write(data or b"")
                printed.add(name)
        if not follow or finished:
            return
        await anyio.sleep(_POLL)


async def _exists(storage: Storage, location: str) -> bool:
    if is_remote(location):
        return bool(await storage.list(location))
    return await anyio.Path(location).is_dir()


async def _has_log(storage: Storage, location: str) -> bool:
    if is_remote(location):
        return bool(await storage.list(f"{location}/{LOG}"))
    return await anyio.Path(location, LOG).exists()


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
        data = await anyio.to_thread.run_sync(_read_from, path, offset)
        if data:
            write(data)
            offset += len(data)
        if not follow or finished:
            return
        await anyio.sleep(_POLL)


def _read_from(path: str, offset: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""
