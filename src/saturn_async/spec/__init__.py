"""The job/batch file format: Structs, decoding with field-path errors, resolution."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from saturn_async.exceptions import InputError
from saturn_async.spec.decode import decode_document
from saturn_async.spec.input_file import check_input_size, read_input
from saturn_async.spec.models import Batch, Run
from saturn_async.spec.overlap import check_distinct_outputs
from saturn_async.spec.paths import is_remote, normalize_location
from saturn_async.spec.resolve import resolve_batch
from saturn_async.spec.results_dirs import check_local_results_dirs

_COMMAND_LIST_HINT = "a list of commands, one per line? saturn batch --commands FILE -o DIR"

__all__ = [
    "Batch",
    "Run",
    "check_distinct_outputs",
    "check_named_once",
    "load_batch_file",
    "load_batch_files",
    "resolve_batch",
]


def load_batch_file(
    path: str | Path,
    *,
    nprocs: int | None = None,
    remote_output_path: str | None = None,
    max_input_size: int | None = None,
    output_flag: str | None = None,
    data: bytes | None = None,
) -> Batch:
    """Read, decode and resolve one job or batch file (JSON or YAML).

    ``max_input_size``: the file's size limit (default: ``spec.input_file.max_input_size``);
    ``output_flag``: see :func:`resolve_batch`. ``data``: the file's content, read by the
    caller (an ``s3://`` URL's: ``storage.inputs.read_remote_input``, in its event loop).
    """
    # The file's bytes are not kept while the runs are resolved: they are as large again.
    try:
        batch = decode_document(path, _read(str(path), max_input_size, data), Batch)
    except InputError as exc:
        if exc.field != "$" or not exc.message.startswith("expected `object`"):
            raise
        message = f"{exc.message} ({_COMMAND_LIST_HINT})"
        raise InputError(message, source=exc.source, field=exc.field) from exc
    return resolve_batch(
        batch,
        str(path),
        nprocs=nprocs,
        remote_output_path=remote_output_path,
        output_flag=output_flag,
    )


def _read(path: str, max_size: int | None, data: bytes | None) -> bytes:
    if data is not None:
        return check_input_size(data, path, max_size)
    if is_remote(path):
        raise InputError(
            "pass an s3:// file's content as data= (storage.inputs.read_remote_input)",
            source=path,
        )
    return read_input(path, max_size)


def load_batch_files(
    paths: list[str],
    *,
    nprocs: int | None = None,
    max_input_size: int | None = None,
    data: Mapping[str, bytes] = MappingProxyType({}),
) -> list[Batch]:
    """Load several batch files, each named once; no run of any of them may have an output
    path that is, lies inside or holds another's (``spec.overlap``), and each
    ``local_results_dir`` must be one saturn can create (``spec.results_dirs``).
    ``data``: the content of the ``s3://`` ones, by path."""
    check_named_once(paths)
    batches = [
        load_batch_file(path, nprocs=nprocs, max_input_size=max_input_size, data=data.get(path))
        for path in paths
    ]
    check_distinct_outputs(list(zip(paths, batches, strict=True)))
    check_local_results_dirs(batches, paths)
    return batches


def check_named_once(paths: list[str]) -> None:
    """InputError when two of ``paths`` name one file: the same local file (device and
    inode, however it is spelled or linked) or the same normalized ``s3://`` URL."""
    first: dict[object, str] = {}
    for path in paths:
        identity = _identity(path)
        if identity is None:
            continue  # reading it reports why
        if identity in first:
            raise InputError(f"names the same file as {first[identity]!r}", source=path)
        first[identity] = path


def _identity(path: str) -> object:
    if is_remote(path):
        try:
            return normalize_location(path, source=path, field="$")
        except InputError:
            return None
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return (info.st_dev, info.st_ino)
