"""Uploading a run's ``results/`` with bounded concurrency over a streaming walk.

A thread walks the directory (:func:`results_walk.walk_results`) a chunk at a time into a
small buffer; ``concurrency`` workers take files from it and upload them. Memory is
bounded by the buffer, the workers and the depth of the tree, whatever the number of
files. Links and special files are skipped, never opened; a file that cannot be read,
or whose name storage refuses, is a failure of that file, and the walk goes on. The
first StorageError from storage itself ends the upload: the run's other results are
then not uploaded (storage is refusing or away), which the report says.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import anyio
import anyio.abc
import anyio.to_thread

from saturn_async.exceptions import NotRegularFile, StorageError
from saturn_async.storage.base import Sink
from saturn_async.storage.results_walk import Entry, ResultsReport, reason_of, walk_results

UPLOAD_CONCURRENCY = 8
"""Files in flight at once; big files go up as multipart, their parts in parallel too."""
_WALK_CHUNK = 256
"""Entries walked per trip to the walking thread."""


async def upload_directory(
    storage: Sink, directory: str, location: str, concurrency: int = UPLOAD_CONCURRENCY
) -> ResultsReport:
    """Upload every regular file under ``directory`` to ``location/RELATIVE_PATH``.

    Returns what was skipped or failed; raises nothing for one file's failure.
    """
    report = ResultsReport()
    walk = walk_results(directory)
    send, receive = anyio.create_memory_object_stream[str](concurrency)

    async def feed() -> None:
        uploaders = 0  # started as files come, so a run without results starts none
        async with send, receive:
            while chunk := await anyio.to_thread.run_sync(_take, walk):
                for entry in chunk:
                    if entry.kind != "file":
                        report.add(entry)
                        continue
                    problem = storage.name_problem(f"{location}/{entry.relative}")
                    if problem is not None:
                        report.add(Entry(entry.relative, "failed", problem))
                        continue
                    if uploaders < concurrency:
                        uploaders += 1
                        tg.start_soon(upload, receive.clone())
                    await send.send(entry.relative)

    async def upload(files: anyio.abc.ObjectReceiveStream[str]) -> None:
        async with files:
            async for relative in files:
                try:
                    await storage.put_file(f"{location}/{relative}", f"{directory}/{relative}")
                except NotRegularFile as exc:
                    report.add(Entry(relative, "skipped", exc.strerror or "not a regular file"))
                except OSError as exc:
                    report.add(Entry(relative, "failed", reason_of(exc)))
                except StorageError as exc:
                    report.add(
                        Entry(relative, "failed", f"{exc}; the results after it were not uploaded")
                    )
                    tg.cancel_scope.cancel()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(feed)
    finally:
        walk.close()
    return report


def _take(walk: Iterator[Entry]) -> list[Entry]:
    return list(itertools.islice(walk, _WALK_CHUNK))
