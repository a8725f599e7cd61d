"""Shipping ``split``'s batches through S3 (``--remote-commands-directory s3://...``).

``split`` uploads the batch files and ``--sync`` tarballs it wrote into OUTDIR to the
URL; the recipe's start script downloads them again on the machine that runs the
batches, into OUTDIR's absolute path, with the aws CLI when it is there and with
``python -m saturn_async fetch`` (:func:`fetch`) otherwise. Only the names ``split``
writes travel: ``N.json`` and ``sync-NAME.tar.gz``, directly under the URL.

Every transfer is a coroutine, run in the calling command's event loop.
"""

from __future__ import annotations

import os
import re
import shlex
import uuid
from pathlib import Path

import anyio
import anyio.to_thread

from saturn_async.exceptions import InputError, StorageError
from saturn_async.spec.paths import normalize_location
from saturn_async.split_outdir import MANIFEST, record_names, recorded_names
from saturn_async.storage import Storage, storage_for
from saturn_async.storage.local import write_all

SHIPPED = re.compile(r"^(?:\d+\.json|sync-[^/]+\.tar\.gz)$")
"""The names split writes that travel: batch files and --sync tarballs."""
_CHUNK = 8 << 20
"""Bytes per ranged GET when fetching: memory stays bounded whatever the tarball."""
_TRANSFERS = 16
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


async def check_destination(url: str, flag: str) -> str:
    """``url`` normalized, once S3 says it can be written (before split writes anything);
    InputError, MissingExtraError or StorageError otherwise."""
    location = normalize_location(url, source=flag, field="")
    async with storage_for(location) as storage:
        await storage.check(location)
    return location


async def upload(out: Path, names: list[str], url: str) -> None:
    """Upload ``out/NAME`` to ``url/NAME`` for each name, a few at a time."""
    limiter = anyio.CapacityLimiter(_TRANSFERS)

    async def one(storage: Storage, name: str) -> None:
        async with limiter:
            await storage.put_file(f"{url}/{name}", str(out / name))

    async with storage_for(url) as storage, anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(one, storage, name)


def download_lines(url: str, directory: str) -> list[str]:
    """The start-script lines that fetch what :func:`upload` shipped into ``directory``."""
    source, dest = shlex.quote(url), shlex.quote(directory)
    filters = "--exclude '*' --include '*.json' --include 'sync-*.tar.gz' --exclude '*/*'"
    return [
        f"mkdir -p {dest}",
        "if command -v aws >/dev/null 2>&1; "
        f"then aws s3 cp --quiet --recursive {source} {dest} {filters}; "
        f"else python -m saturn_async fetch {source} {dest}; fi",
    ]


async def fetch(url: str, directory: str) -> list[str]:
    """Download every batch file and ``--sync`` tarball directly under ``url`` into
    ``directory`` (absolute; created if missing); return their names.

    A file of one of those names that is already in ``directory`` is replaced only if
    saturn wrote it (the directory's split manifest lists it), else refused before
    anything is fetched; the manifest then lists what was fetched.
    """
    location = normalize_location(url, source=url, field="")
    out = Path(directory)
    async with storage_for(location) as storage:
        objects = [o for o in await storage.list(location) if SHIPPED.match(o.name)]
        if not objects:
            raise InputError("holds no batch files (N.json) or sync tarballs", source=url)
        names = [o.name for o in objects]
        await anyio.to_thread.run_sync(_claim, out, names)
        limiter = anyio.CapacityLimiter(_TRANSFERS)
        async with anyio.create_task_group() as tg:
            for item in objects:
                tg.start_soon(_download, storage, limiter, location, item.name, out, item.size)
        return names


def _claim(out: Path, names: list[str]) -> None:
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        ours = recorded_names(out) if (out / MANIFEST).exists() else set()
        for name in names:
            if name not in ours and os.path.lexists(out / name):
                raise InputError(
                    "exists and was not written by saturn; move it away", source=str(out / name)
                )
        record_names(out, ours | set(names))
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror}", source=str(out)) from exc


async def _download(
    storage: Storage,
    limiter: anyio.CapacityLimiter,
    location: str,
    name: str,
    out: Path,
    size: int,
) -> None:
    """``location/name`` into ``out/name``: ranged GETs into a new temporary file (never
    one that exists, never through a link), renamed into place when complete."""
    source = f"{location}/{name}"
    tmp = out / f"{name}.tmp-{uuid.uuid4().hex}"
    async with limiter:
        try:
            fd = os.open(tmp, _FLAGS, 0o600)
        except OSError as exc:
            raise StorageError(str(out / name), "write", exc.strerror or str(exc)) from exc
        try:
            offset = 0
            while offset < size:
                piece = await storage.get_range(source, offset, _CHUNK)
                if not piece:
                    raise StorageError(source, "GetObject", "shorter than its listing said")
                await anyio.to_thread.run_sync(write_all, fd, piece)
                offset += len(piece)
            os.close(fd)
            fd = -1
            os.replace(tmp, out / name)
        except BaseException as exc:
            if fd >= 0:
                os.close(fd)
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise StorageError(str(out / name), "write", exc.strerror or str(exc)) from exc
            raise
