"""Reading input files (job, batch, sweep, recipe files) with a size limit.

A file over the limit is refused before it is read (a regular file, by its size) or as
soon as the limit is passed (a device or a pipe, read in chunks): ``saturn batch
/dev/zero`` stops at the limit instead of filling the memory. The limit is
:data:`DEFAULT_MAX_INPUT_SIZE` unless ``$SATURN_MAX_INPUT_SIZE`` or a command's
``--max-input-size`` says otherwise.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from saturn_async.exceptions import InputError

DEFAULT_MAX_INPUT_SIZE = 1 << 30
"""1 GiB: about 14 times the 1,000,000-run job file of scripts/bench (72 MB)."""
MAX_INPUT_SIZE_ENV = "SATURN_MAX_INPUT_SIZE"
_CHUNK = 1 << 20
_SIZE = re.compile(r"^\s*(?P<number>[0-9]+)\s*(?P<unit>[KMGT]?)i?B?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str, *, source: str) -> int:
    """``1048576``, ``512K``, ``2G``, ``1GiB`` (binary units) as a number of bytes."""
    match = _SIZE.match(text)
    if match is None or int(match["number"]) == 0:
        raise InputError(
            f"{text!r} is not a size (a positive number of bytes, or with K, M, G or T)",
            source=source,
        )
    return int(match["number"]) * _UNITS[match["unit"].upper()]


def format_size(count: float) -> str:
    """A number of bytes for people, in the units :func:`parse_size` reads (``1.5G``)."""
    for unit in ("T", "G", "M", "K"):
        scale = _UNITS[unit]
        if count >= scale:
            return f"{count / scale:.3g}{unit}"
    return f"{count:.0f} bytes"


def max_input_size(max_size: int | None = None) -> int:
    """``max_size`` when given, else ``$SATURN_MAX_INPUT_SIZE``, else the default."""
    if max_size is not None:
        return max_size
    value = os.environ.get(MAX_INPUT_SIZE_ENV)
    return parse_size(value, source=MAX_INPUT_SIZE_ENV) if value else DEFAULT_MAX_INPUT_SIZE


def read_input(path: str | Path, max_size: int | None = None) -> bytes:
    """Read a whole input file of at most ``max_size`` bytes (see :func:`max_input_size`).

    An unreadable file, or one over the limit, is an InputError naming it.
    """
    try:
        with open(path, "rb", buffering=0) as f:
            return _read_limited(f.fileno(), str(path), max_input_size(max_size))
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", source=str(path)) from exc


def read_stdin(source: str, max_size: int | None = None) -> bytes:
    """The whole standard input (``-`` for a file argument), within the same limit;
    errors name ``source``."""
    try:
        return _read_limited(0, source, max_input_size(max_size))
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", source=source) from exc


def _read_limited(fd: int, source: str, limit: int) -> bytes:
    info = os.fstat(fd)
    regular = stat.S_ISREG(info.st_mode)
    if regular and info.st_size > limit:
        raise _too_big(source, info.st_size, limit)
    # One read of a regular file, whose size is known; chunks of anything else.
    size = info.st_size + 1 if regular else _CHUNK
    chunks: list[bytes] = []
    total = 0
    while chunk := os.read(fd, min(size, limit + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise _too_big(source, None, limit)
    return b"".join(chunks)


def check_input_size(data: bytes, source: str, max_size: int | None = None) -> bytes:
    """``data`` (already read from elsewhere, an S3 object say) if it is within the limit."""
    limit = max_input_size(max_size)
    if len(data) > limit:
        raise _too_big(source, len(data), limit)
    return data


def _too_big(path: str | Path, size: int | None, limit: int) -> InputError:
    """``size`` None: a stream that went on past the limit."""
    what = "holds more than" if size is None else f"is {size:,} bytes, over"
    return InputError(
        f"{what} the input size limit of {limit:,} bytes "
        f"(raise it with --max-input-size or ${MAX_INPUT_SIZE_ENV})",
        source=str(path),
    )
