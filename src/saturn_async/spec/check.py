"""Checks that a resolved batch can be started at all, made before anything starts.

``resolve_batch`` calls :func:`check_runnable`; the daemon calls it again on what its
socket receives and on what its journal replays, so a batch that cannot be spawned is
refused (exit 2) instead of failing, or crashing something, at run time.

Linux limits checked: ``MAX_ARG_STRLEN`` (one argument or one ``NAME=value`` string may
be at most 32 pages, 131,072 bytes with its NUL) and ``execve``'s rule that no string
holds a NUL byte. Environment names may not be empty or hold ``=``.
"""

from __future__ import annotations

from saturn_async.exceptions import InputError
from saturn_async.spec.models import Batch, Env

MAX_ARG_BYTES = 131_072 - 1
"""The longest ``cmd`` (UTF-8 bytes), and the longest ``NAME=value``: MAX_ARG_STRLEN."""


def check_runnable(batch: Batch, source: str) -> None:
    """Raise InputError naming ``source`` and the field when a run could not be spawned."""
    if batch.env:
        _check_env(batch.env, source, "$.env")
    for index, run in enumerate(batch.runs):
        field = f"$.runs[{index}]"
        cmd = run.cmd
        if "\0" in cmd:
            raise InputError(
                "holds a NUL byte, which no command can", source=source, field=f"{field}.cmd"
            )
        if len(cmd) > MAX_ARG_BYTES // 4 and len(cmd.encode()) > MAX_ARG_BYTES:
            raise InputError(
                f"is {len(cmd.encode()):,} bytes; Linux passes at most {MAX_ARG_BYTES:,} bytes "
                "as one argument (put a long command in a script)",
                source=source,
                field=f"{field}.cmd",
            )
        if run.env:
            _check_env(run.env, source, f"{field}.env")


def _check_env(env: Env, source: str, field: str) -> None:
    for name, value in env.items():
        where = f"{field}.{name}" if name and "\0" not in name else field
        if not name:
            raise InputError("an environment variable's name is empty", source=source, field=field)
        if "=" in name or "\0" in name:
            raise InputError(
                f"environment variable name {name!r} holds '=' or a NUL byte",
                source=source,
                field=field,
            )
        if "\0" in value:
            raise InputError(
                "holds a NUL byte, which no environment value can", source=source, field=where
            )
        if (
            len(name) + len(value) + 1 > MAX_ARG_BYTES // 4
            and len(f"{name}={value}".encode()) > MAX_ARG_BYTES
        ):
            raise InputError(
                f"NAME=value is over {MAX_ARG_BYTES:,} bytes, more than Linux passes",
                source=source,
                field=where,
            )
