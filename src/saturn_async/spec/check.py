"""Checks that a resolved batch can be started at all, made before anything starts.

``resolve_batch`` calls :func:`check_runnable`; the daemon calls it again on what its
socket receives and on what its journal replays, so a batch that cannot be spawned is
refused (exit 2) instead of failing, or crashing something, at run time.

Linux limits checked: ``MAX_ARG_STRLEN`` (one argument or one ``NAME=value`` string may
be at most 32 pages, 131,072 bytes with its NUL), ``ARG_MAX`` (all arguments and
environment strings together, with a pointer each: a quarter of the stack limit, at most
6 MiB), counting the environment a run inherits from this process, and ``execve``'s rule
that no string holds a NUL byte. Environment names may not be empty or hold ``=``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from saturn_async.exceptions import InputError
from saturn_async.spec.memory import memory_bytes
from saturn_async.spec.models import Batch, Env, Run

MAX_ARG_BYTES = 131_072 - 1
"""The longest ``cmd`` (UTF-8 bytes), and the longest ``NAME=value``: MAX_ARG_STRLEN."""
_POINTER = 8
_KERNEL_ARG_MAX = 6 << 20
"""``_STK_LIM / 4 * 3``: the kernel's cap on arguments and environment, whatever the
stack limit."""
SATURN_ENV_MARGIN = 4 * (4096 + 64)
"""Room for the variables the supervisor adds: the three ``SATURN_RUN_*`` and the
daemon's ``SATURN_DAEMON_RUN_ID`` (paths, at most PATH_MAX, each with its name)."""


def check_runnable(batch: Batch, source: str) -> None:
    """Raise InputError naming ``source`` and the field when a run could not be spawned."""
    if batch.env:
        _check_env(batch.env, source, "$.env")
    if batch.memory is not None:
        memory_bytes(batch.memory, source=source, field="$.memory")
    inherited = _env_bytes(os.environb) + _env_bytes(batch.env or {})
    # What one run's cmd and env may take: ARG_MAX less `sh -c`, the inherited
    # environment and the supervisor's variables.
    budget = _arg_max() - inherited - SATURN_ENV_MARGIN - len(b"sh\0-c\0") - 4 * _POINTER
    # A command this short fits both limits, however many bytes each character takes:
    # most runs need no more than the NUL test.
    short = min(MAX_ARG_BYTES, budget) // 4
    runs = batch.runs
    cmds = [run.cmd for run in runs]
    if (
        max(map(len, cmds), default=0) <= short
        and "\0" not in "".join(cmds)
        and not any(run.env or run.memory is not None for run in runs)
    ):
        return  # batch-wide: every run takes the test below, and passes it
    for index, run in enumerate(runs):
        if run.env or len(run.cmd) > short or "\0" in run.cmd or run.memory is not None:
            _check_run(run, f"$.runs[{index}]", source, budget, inherited)


def _check_run(run: Run, field: str, source: str, budget: int, inherited: int) -> None:
    cmd = run.cmd
    if "\0" in cmd:
        raise InputError(
            "holds a NUL byte, which no command can", source=source, field=f"{field}.cmd"
        )
    cmd_bytes = len(cmd.encode())
    if cmd_bytes > MAX_ARG_BYTES:
        raise InputError(
            f"is {cmd_bytes:,} bytes; Linux passes at most {MAX_ARG_BYTES:,} bytes "
            "as one argument (put a long command in a script)",
            source=source,
            field=f"{field}.cmd",
        )
    if run.env:
        _check_env(run.env, source, f"{field}.env")
    if run.memory is not None:
        memory_bytes(run.memory, source=source, field=f"{field}.memory")
    size = cmd_bytes + 1 + _POINTER + _env_bytes(run.env or {})
    if size > budget:
        raise InputError(
            f"cmd and env take {size:,} bytes; with the {inherited:,} bytes of the "
            f"environment runs inherit, that is over Linux's ARG_MAX of "
            f"{_arg_max():,} bytes (pass less through cmd and env: a file, say)",
            source=source,
            field=field,
        )


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


def _arg_max() -> int:
    """The kernel's limit on one ``execve``'s arguments and environment together."""
    return min(os.sysconf("SC_ARG_MAX"), _KERNEL_ARG_MAX)


def _env_bytes(env: Mapping[str, str] | Mapping[bytes, bytes]) -> int:
    """What ``env`` takes in an ``execve``: each ``NAME=value`` with its NUL and pointer."""
    return sum(_size(name) + _size(value) + 2 + _POINTER for name, value in env.items())


def _size(text: str | bytes) -> int:
    return len(text) if isinstance(text, bytes) or text.isascii() else len(text.encode())
