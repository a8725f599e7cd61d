"""The sweep file of Saturn Run (``saturn run run.yaml``), as msgspec Structs.

``name``, ``tasks: [{name, command}]``, ``executor: {class_spec, ...}`` and
``results: {class_spec, ...}`` are Saturn Run's; ``nprocs``, ``batch_size``, ``timeout``,
``retries``, the ``retry_*`` fields, ``env``, ``memory``, ``gpus``, ``gpus_per_run`` and
``halt`` are ours (docs/executors.md). The executor and results sections are checked by
the backend that ``class_spec`` names, so their errors name the field too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import msgspec

from saturn_async.exceptions import InputError
from saturn_async.spec.decode import decode_document
from saturn_async.spec.halt import parse_halt
from saturn_async.spec.input_file import read_input
from saturn_async.spec.models import (
    AtLeastOne,
    Count,
    Env,
    ExitCodes,
    Factor,
    GpuSpec,
    MemorySize,
    NonNegative,
    PositiveSeconds,
    Slots,
)
from saturn_async.spec.paths import NAME_MAX, RESERVED

_SPECIAL = frozenset(("", ".", "..", RESERVED))
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""Sweep names: they name a directory in the state store and Dask keys."""


class Task(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """One run of a sweep: its output directory is ``<results>/<name>``."""

    name: str | None = None
    command: Annotated[str, msgspec.Meta(min_length=1)]
    timeout: PositiveSeconds | None = None
    retries: Count | None = None
    env: Env | None = None
    memory: MemorySize | None = None
    gpus_per_run: Count | None = None


class Sweep(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    name: str | None = None
    tasks: Annotated[list[Task], msgspec.Meta(min_length=1)]
    executor: dict[str, Any] | None = None
    results: dict[str, Any] | None = None
    nprocs: Slots | None = None
    batch_size: AtLeastOne | Literal["auto"] = "auto"
    timeout: PositiveSeconds | None = None
    retries: Count | None = None
    retry_delay: NonNegative | None = None
    retry_backoff: Factor | None = None
    retry_delay_max: PositiveSeconds | None = None
    retry_on: ExitCodes | None = None
    """The waits between retries and the statuses retried, for every task (job-format.md)."""
    env: Env | None = None
    memory: MemorySize | None = None
    halt: str | None = None
    """Stop the whole sweep early (``now,fail=N``): spec/halt.py; ``saturn run`` acts on it."""
    working_dir: str | None = None
    """Where every task starts, on the workers; relative to the client's working directory.
    Default: the executor's (docs/executors.md, "The working directory")."""
    gpus: GpuSpec | None = None
    """Each worker's GPU pool (default ``all`` when a task asks for GPUs)."""
    gpus_per_run: Count | None = None


def load_sweep(path: str | Path, max_input_size: int | None = None) -> Sweep:
    """Read and check a sweep file; every task gets a name (its index when it has none)."""
    source = str(path)
    sweep = decode_document(path, read_input(path, max_input_size), Sweep)
    if sweep.name is not None:
        check_sweep_name(sweep.name, source=source, field="$.name")
    if sweep.halt is not None:
        parse_halt(sweep.halt, source=source, field="$.halt")
    names = [task.name for task in sweep.tasks]
    if None in names:
        for index, task in enumerate(sweep.tasks):
            if task.name is None:
                task.name = names[index] = str(index)
    given = cast(list[str], names)  # each task has a name now
    if not _plain_names(given):
        _check_names(given, source)
    return sweep


def _plain_names(names: list[str]) -> bool:
    """True when no task's name can fail :func:`_check_names`, checked for them all at
    once: none twice, none '', '.', '..' or RESERVED, no '/' or NUL, none over NAME_MAX."""
    joined = "\0".join(names)
    return (
        "/" not in joined
        and joined.count("\0") == len(names) - 1
        and len(set(names)) == len(names)
        and _SPECIAL.isdisjoint(names)
        and max(map(len, names)) <= NAME_MAX // 4
    )


def _check_names(names: list[str], source: str) -> None:
    """Raise InputError for the first task whose name cannot name its directory, or
    names another's."""
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        field = f"$.tasks[{index}].name"
        if (
            "/" in name
            or "\0" in name
            or name in _SPECIAL
            or (len(name) > NAME_MAX // 4 and len(name.encode()) > NAME_MAX)
        ):
            raise InputError(
                f"{name!r} cannot name a directory (no '/', NUL, '.', '..' or "
                f"{RESERVED!r}; at most {NAME_MAX} bytes)",
                source=source,
                field=field,
            )
        first = seen.setdefault(name, index)
        if first != index:
            raise InputError(
                f"{name!r} is also the name of $.tasks[{first}]", source=source, field=field
            )


def check_sweep_name(name: str, *, source: str, field: str) -> str:
    if not NAME.match(name):
        raise InputError(
            f"{name!r} is not a sweep name (letters, digits, '.', '_', '-'; at most 128)",
            source=source,
            field=field,
        )
    return name


def class_spec_of(section: dict[str, Any], *, source: str, field: str) -> str:
    """The ``class_spec`` of an executor or results section (required, a string)."""
    spec = section.get("class_spec")
    if not isinstance(spec, str) or not spec:
        raise InputError("required field is missing", source=source, field=f"{field}.class_spec")
    return spec
