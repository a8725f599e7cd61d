"""The job/batch file format of Saturn Cloud's massively parallel jobs, as msgspec Structs.

A *job file* (the input of ``split``) and a *batch file* (the input of ``batch``) share one
format; ``split`` writes batch files in it. Fields beyond the original's (``timeout``,
``retries``, the ``retry_*`` fields, ``env``, ``memory``, ``halt``) are documented in
docs/job-format.md.

The Structs of a file (here and in ``spec.sweep``) are ``gc=False``: they hold only
strings, numbers and string dicts, so they form no reference cycles, and a file of a
million runs is not a million objects for the cycle collector to walk (16 bytes less
each, too).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

PositiveSeconds = Annotated[float, msgspec.Meta(gt=0)]
Count = Annotated[int, msgspec.Meta(ge=0)]
AtLeastOne = Annotated[int, msgspec.Meta(ge=1)]
MAX_NPROCS = 4_194_304
"""PID_MAX_LIMIT: Linux never has more processes at once, so no more slots make sense."""
Slots = Annotated[int, msgspec.Meta(ge=1, le=MAX_NPROCS)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Env = dict[str, str]
MemorySize = Annotated[int, msgspec.Meta(ge=1)] | str
"""A memory cap: bytes, or a size with K, M, G or T (``4G``); see spec/memory.py."""
GpuSpec = (
    Annotated[int, msgspec.Meta(ge=1)]
    | str
    | Annotated[list[Annotated[int, msgspec.Meta(ge=0)] | str], msgspec.Meta(min_length=1)]
)
"""A GPU pool: ``all``, a count, or a device list (``[0, 1]`` or ``"0,1"``); see
``supervisor/gpu_devices.py``."""
Factor = Annotated[float, msgspec.Meta(ge=1)]
FailedStatus = Annotated[int, msgspec.Meta(ge=1, le=255)]
ExitCodes = Annotated[list[FailedStatus], msgspec.Meta(min_length=1)]


class Run(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """One shell command with its own output location."""

    remote_output_path: str | None = None
    cmd: Annotated[str, msgspec.Meta(min_length=1)]
    local_results_dir: str | None = None
    timeout: PositiveSeconds | None = None
    retries: Count | None = None
    retry_delay: NonNegative | None = None
    retry_backoff: Factor | None = None
    retry_delay_max: PositiveSeconds | None = None
    retry_on: ExitCodes | None = None
    env: Env | None = None
    memory: MemorySize | None = None
    gpus_per_run: Count | None = None
    # Written into batch files by the original client; accepted so its files still run.
    status_code: int | None = None
    status: str | None = None


class Batch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """A group of runs sharing ``nprocs`` and an output root; also the job file format."""

    nprocs: Slots | None = None
    remote_output_path: str | None = None
    runs: Annotated[list[Run], msgspec.Meta(min_length=1)]
    timeout: PositiveSeconds | None = None
    retries: Count | None = None
    retry_delay: NonNegative | None = None
    """Seconds before the first retry (default 0), jittered to 50-100%."""
    retry_backoff: Factor | None = None
    """Each further retry waits this many times longer (default 1)."""
    retry_delay_max: PositiveSeconds | None = None
    """The longest wait before a retry (default: none)."""
    retry_on: ExitCodes | None = None
    """Retry only failures with these exit statuses (default: any failure)."""
    env: Env | None = None
    memory: MemorySize | None = None
    """The memory cap of each run that sets none (docs/job-format.md, "Memory caps")."""
    halt: str | None = None
    """When to stop the batch's runs early: spec/halt.py (``soon,fail=3``)."""
    layout: Literal["batch", "sweep"] = "batch"
    """Output file names: ``batch`` (``sc batch``) or ``sweep`` (Saturn Run's, ``saturn run``)."""
    working_dir: str | None = None
    """The directory every run starts in (default: the supervisor's; relative to it); a
    run cannot start where it does not exist."""
    gpus: GpuSpec | None = None
    """The machine's GPU pool, like ``nprocs`` its slots (or ``--gpus``)."""
    gpus_per_run: Count | None = None
    """Distinct devices of the pool each run holds (default 1 with a pool)."""
