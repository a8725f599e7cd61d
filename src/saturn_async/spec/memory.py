"""Memory caps (``memory: 4G``) read into bytes, with errors naming the file and field."""

from __future__ import annotations

from saturn_async.exceptions import InputError
from saturn_async.spec.input_file import parse_size
from saturn_async.spec.models import MemorySize

MIN_MEMORY = 1 << 20
"""The smallest cap: below a MiB not even ``sh`` starts."""


def memory_bytes(value: MemorySize, *, source: str, field: str | None = None) -> int:
    """``4G``, ``512M``, ``1048576`` (bytes) as a number of bytes; InputError otherwise."""
    if isinstance(value, int):
        size = value
    else:
        try:
            size = parse_size(value, source="")
        except InputError as exc:
            raise InputError(exc.message, source=source, field=field) from exc
    if size < MIN_MEMORY:
        raise InputError(
            f"{value!r} is under the smallest memory cap, 1M", source=source, field=field
        )
    return size
