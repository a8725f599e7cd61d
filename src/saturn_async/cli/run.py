"""``saturn run RUN_YAML``: dispatch a sweep through its executor, then follow it.

The whole command runs in one event loop, which receives the stop signals before
anything is dispatched; the use case itself is :mod:`saturn_async.sweep.launch`.
"""

from __future__ import annotations

import sys

import anyio
import click

from saturn_async.cli.following import follow_sweep, interrupted
from saturn_async.cli.options import (
    SLOTS,
    grace_option,
    halt_option,
    joblog_option,
    log_chunk_minutes_option,
    max_input_size_option,
)
from saturn_async.cli.stop_signals import receive_stop_signals
from saturn_async.exceptions import InputError
from saturn_async.joblog import open_task_logger
from saturn_async.spec.halt import HaltPolicy
from saturn_async.supervisor.halt import Halt, sweep_halt_policy
from saturn_async.sweep import launch


@click.command()
@click.argument("sweep_file", metavar="[RUN_YAML]", type=click.Path(dir_okay=False), required=False)
@click.option("--name", help="The sweep's name (default: the file's name: field).")
@click.option("--prefix", help="Name the sweep PREFIX-<UTC timestamp>.")
@click.option("--replace", is_flag=True, help="Reuse a name in use, forgetting the old sweep.")
@click.option(
    "--resume",
    is_flag=True,
    help="Run the recorded sweep of this name again: only its tasks without status success "
    "(unfinished and failed), keeping every task in its record. RUN_YAML defaults to the "
    "file it was started from.",
)
@click.option(
    "--nprocs",
    type=SLOTS,
    help="Slots per batch [default: the file's nprocs, else the CPU count].",
)
@grace_option
@log_chunk_minutes_option("For S3 and Dask results: ship each log as a new chunk this often.")
@click.option("--skip-completed", is_flag=True, help="Leave out tasks whose status is success.")
@click.option(
    "--detach",
    is_flag=True,
    help="Dispatch, then exit (Dask, Ray with an address, Kubernetes, Slurm).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print what would be dispatched and exit: the batch files as JSON lines, "
    "KubernetesExecutor's manifests (for kubectl apply -f -) or SlurmExecutor's sbatch "
    "script. Records and starts nothing.",
)
@halt_option(
    "the sweep",
    help="now,fail=N|P%: once N tasks (or P% of all) have failed, terminate the whole sweep "
    "on its executor (replaces the file's halt:); tasks not started record nothing. Not "
    "soon, not with --detach. See docs/executors.md.",
)
@joblog_option
@max_input_size_option
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
def run(
    sweep_file: str | None,
    name: str | None,
    prefix: str | None,
    replace: bool,
    resume: bool,
    nprocs: int | None,
    grace: float,
    log_chunk_minutes: float,
    skip_completed: bool,
    detach: bool,
    dry_run: bool,
    halt: HaltPolicy | None,
    joblog: str | None,
    max_input_size: int | None,
    quiet: bool,
) -> None:
    """Run a sweep (Saturn Run's run.yaml): dispatch its tasks in batches, then follow them.

    Each task writes log, events, results/, error (on failure) and, last, status
    (success or failure) to <results>/<task name>. Ctrl-C detaches from executors whose
    batches outlive this process (Dask with a scheduler, Ray with an address,
    Kubernetes, Slurm); with the others it stops the runs. SIGTERM, SIGHUP (a closed terminal)
    and SIGQUIT do as Ctrl-C does. Exit code: 0 all succeeded, 1 some failed, 2 bad
    input, 128+N when interrupted by signal N (130 INT, 143 TERM, 129 HUP, 131 QUIT).
    See docs/executors.md.
    """
    if joblog is not None and detach:
        raise InputError(
            "is written while saturn run follows the sweep; after --detach, use "
            "`saturn status --name NAME --joblog FILE`",
            source="--joblog",
        )
    options = launch.LaunchOptions(
        sweep_file=sweep_file,
        name=name,
        prefix=prefix,
        replace=replace,
        resume=resume,
        nprocs=nprocs,
        grace=grace,
        log_chunk_minutes=log_chunk_minutes,
        skip_completed=skip_completed,
        detach=detach,
        dry_run=dry_run,
        max_input_size=max_input_size,
    )
    code = anyio.run(_run, options, halt, joblog, quiet)
    if code is not None:
        sys.exit(code)


async def _run(
    options: launch.LaunchOptions, halt: HaltPolicy | None, joblog: str | None, quiet: bool
) -> int | None:
    """The exit code, or None when there was nothing to do."""
    async with receive_stop_signals() as stops:
        launching = launch.prepare(options)
        policy = sweep_halt_policy(
            halt, launching.sweep.halt, launching.record.source, detach=options.detach
        )
        record = launching.record
        async with launching.executor as executor:
            with stops.scope():
                ready = await launch.plan(launching)
            if stops.signum is not None:
                return 128 + stops.signum  # nothing was dispatched
            if not ready:
                print("every task has succeeded before; nothing to run")
                return None
            if options.dry_run:
                sys.stdout.writelines(launch.describe(launching))
                return None
            task_logger = open_task_logger(joblog, launching.results.root, record.tasks)
            await launch.dispatch(launching)
            if stops.signum is not None:
                return await interrupted(record, executor, stops.signum)
            if not quiet:
                again = f"{launching.tasks_dispatched} of " if options.resume else ""
                print(
                    f"sweep {record.name}: {again}{len(record.tasks)} tasks in "
                    f"{record.batches} batches via {type(executor).__name__}",
                    file=sys.stderr,
                )
            if options.detach:
                print(f"detached; follow with: saturn collect --name {record.name}")
                return None
            halting = Halt(policy, launching.tasks_dispatched) if policy is not None else None
            code = await follow_sweep(record, executor, quiet, stops, task_logger, halting)
            if code in (0, 1):
                await executor.forget()
            return code
