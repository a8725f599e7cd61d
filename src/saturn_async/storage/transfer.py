"""Uploading a directory tree with bounded concurrency (a run's ``results/``)."""

from __future__ import annotations

import os

import anyio
import anyio.to_thread

from saturn_async.storage.base import Storage

UPLOAD_CONCURRENCY = 8
"""Files in flight at once; big files go up as multipart, their parts in parallel too."""


async def upload_directory(
    storage: Storage, directory: str, location: str, concurrency: int = UPLOAD_CONCURRENCY
) -> int:
    """Upload every file under ``directory`` to ``location/RELATIVE_PATH``; returns the count."""
    files = await anyio.to_thread.run_sync(_files_under, directory)
    limiter = anyio.CapacityLimiter(concurrency)

    async def upload(relative: str) -> None:
        async with limiter:
            await storage.put_file(f"{location}/{relative}", os.path.join(directory, relative))

    async with anyio.create_task_group() as tg:
        for relative in files:
            tg.start_soon(upload, relative)
    return len(files)


def _files_under(directory: str) -> list[str]:
    found: list[str] = []
    for parent, _dirs, files in os.walk(directory):
        found.extend(os.path.relpath(os.path.join(parent, name), directory) for name in files)
    return found
