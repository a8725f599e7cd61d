"""The ``executor:`` section of a sweep run by ``SlurmExecutor`` (docs/executors.md)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from saturn_async.spec.models import AtLeastOne

# One line of an sbatch script: no newline may end an #SBATCH line early.
OneLine = Annotated[str, msgspec.Meta(min_length=1, pattern=r"^[^\r\n]*$")]
Option = Annotated[str, msgspec.Meta(pattern=r"^-[^\r\n]*$")]
"""An sbatch option (``--mem=16G``), written as its own ``#SBATCH`` line."""


class SlurmConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    class_spec: str
    batch_files: OneLine
    """Where the batch files go, seen alike by the client and every node: an absolute
    path on a shared filesystem, or an ``s3://`` prefix."""
    partition: OneLine | None = None
    account: OneLine | None = None
    time_limit: OneLine | None = None
    """Per array task, in sbatch's ``--time`` format (``04:00:00``, ``2-00:00:00``)."""
    max_concurrent: AtLeastOne | None = None
    """The array throttle: at most this many array tasks run at once (``%N``)."""
    sbatch_args: list[Option] = msgspec.field(default_factory=list)
    """Further sbatch options, passed through (``--mem=16G``, ``--requeue``)."""
