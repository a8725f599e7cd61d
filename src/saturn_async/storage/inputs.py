"""Input files (job and batch files) named by an ``s3://`` URL, read for the spec layer.

The spec layer decodes bytes and never opens storage; a command that takes a file
argument reads the remote ones here, in its event loop, and hands the bytes on.
"""

from __future__ import annotations

from collections.abc import Iterable

from saturn_async.exceptions import InputError
from saturn_async.spec.input_file import check_input_size
from saturn_async.spec.paths import is_remote
from saturn_async.storage import storage_for


async def read_remote_input(url: str, max_size: int | None = None) -> bytes:
    """The object at ``url``, within the input size limit (InputError otherwise)."""
    async with storage_for(url) as storage:
        data = await storage.get(url)
    if data is None:
        raise InputError("cannot read: no such object", source=url)
    return check_input_size(data, url, max_size)


async def read_remote_inputs(paths: Iterable[str], max_size: int | None) -> dict[str, bytes]:
    """The content of each ``s3://`` one of ``paths``, by path (local ones are left out)."""
    return {path: await read_remote_input(path, max_size) for path in paths if is_remote(path)}
