"""The job/batch file format: Structs, decoding with field-path errors, resolution."""

from __future__ import annotations

from pathlib import Path

import anyio

from saturn_async.exceptions import InputError
from saturn_async.spec.decode import decode_document, read_bytes
from saturn_async.spec.models import Batch, Run
from saturn_async.spec.paths import is_remote
from saturn_async.spec.resolve import resolve_batch

__all__ = [
    "Batch",
    "Run",
    "check_distinct_outputs",
    "load_batch_file",
    "load_batch_files",
    "resolve_batch",
]


def load_batch_file(
    path: str | Path, *, nprocs: int | None = None, remote_output_path: str | None = None
) -> Batch:
    """Read, decode and resolve one job or batch file (JSON or YAML; path or s3:// URL)."""
    # The file's bytes are not kept while the runs are resolved: they are as large again.
    batch = decode_document(path, _read(str(path)), Batch)
    return resolve_batch(batch, str(path), nprocs=nprocs, remote_output_path=remote_output_path)


def _read(path: str) -> bytes:
    return _read_remote(path) if is_remote(path) else read_bytes(path)


def _read_remote(url: str) -> bytes:
    from saturn_async.storage import storage_for

    async def get() -> bytes | None:
        async with storage_for(url) as storage:
            return await storage.get(url)

    data = anyio.run(get)
    if data is None:
        raise InputError("cannot read: no such object", source=url)
    return data


def load_batch_files(paths: list[str], *, nprocs: int | None = None) -> list[Batch]:
    """Load several batch files; no two runs of any of them may share an output path."""
    batches = [load_batch_file(path, nprocs=nprocs) for path in paths]
    check_distinct_outputs(list(zip(paths, batches, strict=True)))
    return batches


def check_distinct_outputs(named: list[tuple[str, Batch]]) -> None:
    """InputError when two runs of these resolved batches (each with its source) share
    an output path."""
    owner: dict[str, tuple[str, int]] = {}
    for path, batch in named:
        for index, run in enumerate(batch.runs):
            assert run.remote_output_path is not None
            first = owner.setdefault(run.remote_output_path, (path, index))
            if first != (path, index):
                raise InputError(
                    f"{run.remote_output_path!r} is also the output path of "
                    f"$.runs[{first[1]}] in {first[0]}",
                    source=path,
                    field=f"$.runs[{index}].remote_output_path",
                )
