"""Where a sweep's batch files go for Slurm's nodes: a shared directory or an S3 prefix.

Each run of a sweep gets its own directory, ``<batch_files>/<sweep>-<created>/`` (the
time ``saturn run`` recorded it, digits only), made 0700 with files 0600 locally: batch
files hold the runs' ``env``. saturn writes only that directory, and removes it only when sbatch
refused the array it was written for.
"""

from __future__ import annotations

import functools
import os
import re
import shutil

import anyio
import anyio.to_thread
import msgspec

from saturn_async.exceptions import InputError
from saturn_async.spec.models import Batch
from saturn_async.spec.paths import is_remote
from saturn_async.storage import storage_for
from saturn_async.storage.local import write_atomically

PRIVATE = 0o600
_UPLOADS = 16
"""Batch files uploaded at once to S3."""
NODE_LOCAL = ("/tmp", "/var/tmp", "/dev/shm", "/run")
"""Directories each machine has its own of: other nodes cannot see what is written there."""


def batch_dir(root: str, sweep: str, created: str) -> str:
    return f"{root.rstrip('/')}/{sweep}-{re.sub(r'[^0-9]', '', created.partition('+')[0])}"


def node_local(path: str) -> bool:
    """Whether a local ``path`` is in a directory each machine has its own of."""
    real = os.path.realpath(path)
    return any(real == top or real.startswith(f"{top}/") for top in NODE_LOCAL)


def check_visible(path: str, others: set[str], *, source: str, field: str) -> None:
    """Refuse a node-local ``path`` when nodes other than this machine (``others``) run
    the array: they would not find it."""
    if others and not is_remote(path) and node_local(path):
        hosts = ", ".join(sorted(others)[:3]) + (", ..." if len(others) > 3 else "")
        raise InputError(
            f"{path} is on this machine only, and nodes {hosts} run the array: use a "
            "shared filesystem or s3://",
            source=source,
            field=field,
        )


async def write_batch_files(directory: str, batches: list[Batch]) -> None:
    """``directory/<i>.json`` for each batch; the directory must not exist yet."""
    files = {f"{i}.json": msgspec.json.encode(b) for i, b in enumerate(batches)}
    if not is_remote(directory):
        await anyio.to_thread.run_sync(_write_local, directory, files)
        return
    limiter = anyio.CapacityLimiter(_UPLOADS)
    async with storage_for(directory) as storage:

        async def put(name: str, data: bytes) -> None:
            async with limiter:
                await storage.put(f"{directory}/{name}", data)

        async with anyio.create_task_group() as tg:
            for name, data in files.items():
                tg.start_soon(put, name, data)


async def remove_batch_files(directory: str) -> None:
    """Remove what :func:`write_batch_files` wrote in ``directory``."""
    if is_remote(directory):
        async with storage_for(directory) as storage:
            await storage.delete_below(directory)
        return
    await anyio.to_thread.run_sync(functools.partial(shutil.rmtree, directory, ignore_errors=True))


def _write_local(directory: str, files: dict[str, bytes]) -> None:
    os.makedirs(os.path.dirname(directory), exist_ok=True)
    os.mkdir(directory, 0o700)
    for name, data in files.items():
        write_atomically(f"{directory}/{name}", data, PRIVATE)
