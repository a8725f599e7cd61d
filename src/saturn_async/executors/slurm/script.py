"""The sbatch script of a sweep: one job array, array task ``i`` runs batch file ``i``.

A pure function of its inputs, so ``saturn run --dry-run`` prints exactly what
``saturn run`` submits and ``saturn split --format slurm`` writes the same script for
users who submit it themselves. The options are ``#SBATCH`` lines; options given on
sbatch's command line override them. The last line ``exec``s ``saturn batch``, so
Slurm's TERM (scancel, a time limit, preemption) reaches its supervisor, which stops
the runs (TERM, then KILL after the grace) and records their statuses.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

SKIP_FINISHED = "--skip-finished"


@dataclass(frozen=True)
class ArrayJob:
    """What the script submits: ``count`` batch files ``0.json``... in ``batch_dir``."""

    name: str
    batch_dir: str
    count: int
    cpus_per_task: int
    program: Sequence[str]
    """How a node starts saturn (``python -m saturn_async`` or ``saturn``)."""
    batch_options: Sequence[str] = ()
    """``saturn batch`` options, before the batch file."""
    partition: str | None = None
    account: str | None = None
    time_limit: str | None = None
    max_concurrent: int | None = None
    output: str | None = None
    """sbatch's ``--output`` pattern (default: Slurm's, in the submit directory)."""
    sbatch_args: Sequence[str] = ()
    gpus_per_task: int = 0
    """GPUs each array task asks for (``--gpus-per-task``; 0: none)."""


def array_script(job: ArrayJob) -> str:
    throttle = f"%{job.max_concurrent}" if job.max_concurrent is not None else ""
    options = [
        f"--job-name={job.name}",
        f"--array=0-{job.count - 1}{throttle}",
        "--ntasks=1",
        f"--cpus-per-task={job.cpus_per_task}",
    ]
    if job.gpus_per_task:
        options.append(f"--gpus-per-task={job.gpus_per_task}")
    for flag, value in (
        ("--partition", job.partition),
        ("--account", job.account),
        ("--time", job.time_limit),
        ("--output", job.output),
    ):
        if value is not None:
            options.append(f"{flag}={value}")
    options += job.sbatch_args
    batch = f'{shlex.quote(job.batch_dir.rstrip("/"))}/"$SLURM_ARRAY_TASK_ID".json'
    command = " ".join(shlex.quote(part) for part in [*job.program, "batch", *job.batch_options])
    lines = [
        "#!/bin/sh",
        *(f"#SBATCH {option}" for option in options),
        f"# saturn_async: array task i runs batch file i of {job.count} in {job.batch_dir}.",
        "# Requeued by Slurm (node failure, preemption): skip the runs that have a status.",
        "rerun=",
        f'if [ "${{SLURM_RESTART_COUNT:-0}}" -gt 0 ]; then rerun={SKIP_FINISHED}; fi',
        f"exec {command} $rerun {batch}",
    ]
    return "\n".join(lines) + "\n"


def split_script(batch_dir: str, count: int, nprocs: int) -> str:
    """``saturn split --format slurm``'s script: the batch files ``0.json``... of
    ``batch_dir``, run by the ``saturn`` on the nodes' PATH."""
    job = ArrayJob(
        name="saturn-split",
        batch_dir=batch_dir,
        count=count,
        cpus_per_task=nprocs,
        program=["saturn"],
        batch_options=["-q", "--failed-runs-exit-zero"],
    )
    return array_script(job)
