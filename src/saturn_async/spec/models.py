"""The job/batch file format of Saturn Cloud's massively parallel jobs, as msgspec Structs.

A *job file* (the input of ``split``) and a *batch file* (the input of ``batch``) share one
format; ``split`` writes batch files in it. Fields beyond the original's (``timeout``,
``retries``, ``env``) are documented in docs/job-format.md.

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


class Run(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """One shell command with its own output location."""

    remote_output_path: str | None = None
    cmd: Annotated[str, msgspec.Meta(min_length=1)]
    local_results_dir: str | None = None
    timeout: PositiveSeconds | None = None
    retries: Count | None = None
    env: Env | None = None
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
    env: Env | None = None
    layout: Literal["batch", "sweep"] = "batch"
    """Output file names: ``batch`` (``sc batch``) or ``sweep`` (Saturn Run's, ``saturn run``)."""
    working_dir: str | None = None
    """The directory every run starts in (default: the supervisor's; relative to it); a
    run cannot start where it does not exist."""
