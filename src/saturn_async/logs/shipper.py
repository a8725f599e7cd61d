"""Ship a growing local log file to storage as numbered chunk objects while it grows.

The run writes its output straight to a local file (DESIGN.md principle 1); this tails
that file. Each shipped range is then punched out of the file (``fallocate``
PUNCH_HOLE), so the disk blocks are freed while the writer keeps appending: local disk
use stays near one chunk per stream. Where the filesystem cannot punch holes, the file
just keeps its blocks until the run is done.
"""

from __future__ import annotations

import os
import time

import anyio
import anyio.to_thread

from saturn_async.linux import punch_hole
from saturn_async.logs.chunker import ChunkCursor
from saturn_async.storage.base import Sink

CHUNK_CAP = 8 * 2**20
"""The largest chunk: a run printing fast ships a chunk as soon as this much is waiting."""
_POLL = 0.5


def chunk_name(seq: int) -> str:
    return f"{seq:06d}"


async def ship_log(
    storage: Sink,
    path: str,
    target: str,
    interval: float,
    done: anyio.Event,
    cap: int = CHUNK_CAP,
) -> int:
    """Upload ``path`` as ``target/000000``, ``target/000001``, ... until ``done``.

    After ``done`` is set, ships what is left and returns the number of chunks. Upload
    failures are retried by the storage; while it is away, the data waits in the file.
    """
    cursor = ChunkCursor(interval, cap, time.monotonic())
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        while True:
            final = done.is_set()
            size = os.fstat(fd).st_size
            while chunk := cursor.next_chunk(size, time.monotonic(), final):
                data = await anyio.to_thread.run_sync(
                    os.pread, fd, chunk.end - chunk.start, chunk.start
                )
                await storage.put(f"{target}/{chunk_name(chunk.seq)}", data)
                punch_hole(fd, chunk.start, chunk.end - chunk.start)
            if final:
                return cursor.seq
            with anyio.move_on_after(min(_POLL, cursor.seconds_until_due(time.monotonic()))):
                await done.wait()
    finally:
        os.close(fd)
