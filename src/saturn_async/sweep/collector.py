"""The client side of the ``Dask`` and ``Ray`` results backends: apply what a channel
carried to the results directory (``executors/*/receiver.py`` take it off the channel).

Messages come from :class:`saturn_async.storage.queue.QueueSink`, in order per
worker. Log chunks land as numbered files (``log/000000``, ...), as on S3; when a run's
``status`` arrives (always last), its chunk directories are joined into plain ``log``
(and ``log.N``) files before ``status`` is written, so a finished run has Saturn Run's
layout and its status still comes last. A batch run again after its worker died first
sends ``delete_below`` for the chunk directories of each task it runs again: the dead
attempt's chunks go (a real directory only; a link is left alone). Before a retry,
``move_below`` moves the failed attempt's chunks from ``log/`` into ``log.N/``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from typing import Any

from saturn_async.spec.paths import is_strictly_inside
from saturn_async.storage.layout import FINAL_MARKERS, LOG
from saturn_async.storage.local import write_atomically


class Collector:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.rejected = 0
        """Messages naming a location outside the directory (dropped)."""

    def apply(self, message: dict[str, Any]) -> None:
        location = str(message.get("location", ""))
        if not is_strictly_inside(self.directory, os.path.normpath(location)):
            self.rejected += 1
            return
        op = message.get("op")
        os.makedirs(os.path.dirname(location), exist_ok=True)
        if op == "put":
            if os.path.basename(location) in FINAL_MARKERS:
                join_chunks(os.path.dirname(location))  # before the marker: it comes last
            write_atomically(location, message["data"])
        elif op == "part":
            partial = f"{location}.partial"
            with open(partial, "r+b" if message["offset"] else "wb") as f:
                f.seek(message["offset"])
                f.write(message["data"])
            if message["last"]:
                os.replace(partial, location)
        elif op == "delete":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(location)
        elif op == "delete_below":
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                if stat.S_ISDIR(os.lstat(location).st_mode):  # never follows a link
                    shutil.rmtree(location, ignore_errors=True)
        elif op in ("move", "move_below"):
            source = str(message.get("source", ""))
            if not is_strictly_inside(self.directory, os.path.normpath(source)):
                return
            if op == "move":
                with contextlib.suppress(FileNotFoundError):
                    os.replace(source, location)
            else:
                move_files(source, location)


def move_files(source: str, target: str) -> None:
    """Move the files of the directory ``source`` into the directory ``target`` (made if
    missing); either one being anything but a real directory (a link) moves nothing."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        if not stat.S_ISDIR(os.lstat(source).st_mode):
            return
        os.makedirs(target, exist_ok=True)
        if not stat.S_ISDIR(os.lstat(target).st_mode):
            return
        with os.scandir(source) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    os.replace(entry.path, os.path.join(target, entry.name))


def join_chunks(run_dir: str) -> None:
    """Turn ``log/`` and ``log.N/`` chunk directories into plain files of the same name."""
    for entry in os.scandir(run_dir):
        if not (entry.name == LOG or entry.name.startswith(f"{LOG}.")) or not entry.is_dir():
            continue
        joined = f"{entry.path}.joined"
        with open(joined, "wb") as out:
            for chunk in sorted(os.listdir(entry.path)):
                with open(os.path.join(entry.path, chunk), "rb") as f:
                    shutil.copyfileobj(f, out)
        shutil.rmtree(entry.path)
        os.replace(joined, entry.path)
