"""``saturn batch FILE...``: run batch files on this machine, nprocs runs at a time."""

from __future__ import annotations

import os
import shlex
import signal
import sys
from typing import Any

import anyio
import click

from saturn_async.cli.memory_options import memory_caps, memory_options
from saturn_async.cli.options import (
    SLOTS,
    grace_option,
    halt_option,
    joblog_option,
    log_chunk_minutes_option,
    max_input_size_option,
)
from saturn_async.cli.progress import failure_lines, pace, show_progress
from saturn_async.cli.remote_inputs import remote_inputs
from saturn_async.cli.start_options import batch_gate, start_options
from saturn_async.cli.stop_signals import forward_stop_signals
from saturn_async.exceptions import InputError
from saturn_async.joblog import AttemptLogger, open_attempt_logger
from saturn_async.spec import Batch, load_batch_files
from saturn_async.spec.command_list import load_command_list
from saturn_async.spec.halt import HaltPolicy
from saturn_async.supervisor import BatchSummary, Supervisor, slot_count
from saturn_async.supervisor.progress import SweepProgress


@click.command()
@click.argument("files", nargs=-1, metavar="[FILE...]")
@click.option(
    "--commands",
    metavar="FILE",
    help="Run a command list instead of batch FILEs: one cmd per line (blank lines and "
    "# comments skipped; - reads standard input). Needs --output.",
)
@click.option(
    "--output",
    "-o",
    metavar="DIR",
    help="With --commands: where the runs' outputs go, DIR/<index among the runs>.",
)
@click.option(
    "--nprocs", type=SLOTS, help="Slots [default: largest nprocs; with --commands: CPUs]."
)
@grace_option
@click.option(
    "--skip-completed",
    is_flag=True,
    help="Skip runs whose status_code is 0; lost runs (their supervisor died) run again.",
)
@click.option(
    "--skip-finished",
    is_flag=True,
    help="Skip runs that have a status of this --submitted time, whatever its code: for "
    "a batch its job system runs again after losing its node (SlurmExecutor's requeued "
    "array tasks). Waits for runs a live supervisor still holds.",
)
@click.option(
    "--requeue-on-term",
    is_flag=True,
    help="TERM means the job system takes this batch back to run it again (Slurm sends "
    "it to requeue, preempt, at a time limit, on a plain scancel): the runs it stops, and "
    "those waiting to retry, record no status and give their lease back, so the batch run "
    "again with --skip-finished reruns them. A failing attempt is held up to 1 s for that "
    "TERM (the job system's may reach the run first). INT and HUP still record what they "
    "stop (saturn terminate sends INT). SlurmExecutor's array tasks pass it.",
)
@click.option(
    "--submitted",
    metavar="TIME",
    help="The time of every run's submitted event (an ISO 8601 UTC time) [default: now]; "
    "SlurmExecutor's array tasks give the sweep's.",
)
@click.option(
    "--wait-for-owner",
    is_flag=True,
    help="Wait for runs another live supervisor is running (holds their lease) instead "
    "of skipping them; then run them unless it finished them meanwhile.",
)
@log_chunk_minutes_option(
    "For s3:// outputs: ship stdout/stderr as a new chunk this often (fractions work)."
)
@click.option(
    "--staging-dir",
    type=click.Path(file_okay=False),
    help="For s3:// outputs: local directory runs write into before shipping, created "
    "0700; refused if it is a link, another user's, or open to group or others "
    "[default: $SATURN_STAGING_DIR or $TMPDIR/saturn_async-staging-UID].",
)
@click.option(
    "--failed-runs-exit-zero",
    is_flag=True,
    help="Exit 0 when runs failed (their failures are in their outputs), so a job system "
    "does not retry the batch for them (KubernetesExecutor's pods use this).",
)
@memory_options
@halt_option("every run of every FILE together (it replaces the files' halt:)")
@joblog_option
@start_options
@max_input_size_option
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
def batch(
    files: tuple[str, ...],
    commands: str | None,
    output: str | None,
    nprocs: int | None,
    grace: float,
    skip_completed: bool,
    skip_finished: bool,
    requeue_on_term: bool,
    submitted: str | None,
    wait_for_owner: bool,
    log_chunk_minutes: float,
    staging_dir: str | None,
    failed_runs_exit_zero: bool,
    memory: str | None,
    memory_cap: str | None,
    halt: HaltPolicy | None,
    joblog: str | None,
    gpus: str | None,
    memfree: str | None,
    load: float | None,
    max_input_size: int | None,
    quiet: bool,
) -> None:
    """Run every run of every batch FILE with at most nprocs at a time.

    Or a command list: `saturn batch --commands cmds.txt -o out` runs each line as one
    run, its outputs in out/<index among the runs>.

    Slots are shared across files. Each run is `sh -c CMD` in its own process group;
    its stdout, stderr, events and results go to its remote_output_path, and status_code
    is written last. For s3:// paths, logs are shipped as numbered chunks while the run
    runs (see `saturn logs`). Exit code: 0 all succeeded, 1 some failed, 2 bad input (nothing
    started), 128+N when interrupted by signal N (130 INT, 143 TERM, 129 HUP: a closed
    terminal stops the runs like TERM). A second signal, or a first SIGQUIT (131), skips
    the grace period and stops retrying S3 (an outcome not uploaded is kept in the
    staging dir). A run another live supervisor is running is skipped (one line says
    how many), or waited for with --wait-for-owner; never run twice at once. With
    --gpus (or the files' gpus), each run holds its own GPUs while it runs; --memfree
    and --load hold starts back while the machine is short (see docs/cli.md).
    """
    batches = _load(files, commands, output, nprocs, max_input_size)
    slots = slot_count(batches, nprocs)
    caps = memory_caps(memory, memory_cap)
    if caps.capped(batches):
        caps.require()
    sources = files or (str(commands),)
    gate = batch_gate(list(zip(sources, batches, strict=True)), gpus, memfree, load, _stderr)
    display = None if quiet else sys.stdout.isatty()
    supervisor_options = {
        "grace": grace,
        "skip_completed": skip_completed,
        "skip_finished": skip_finished,
        "submitted": submitted,
        "wait_for_owner": wait_for_owner,
        "log_chunk_seconds": log_chunk_minutes * 60,
        "staging_dir": staging_dir,
        "memory_caps": caps,
        "gate": gate,
        "halt": halt,
        "requeue_signal": signal.SIGTERM if requeue_on_term else None,
    }
    logger = open_attempt_logger(joblog, batches)
    try:
        summary, progress = anyio.run(
            _supervise, batches, slots, supervisor_options, display, logger
        )
    finally:
        if logger is not None:
            logger.joblog.close()
    if not quiet:
        print(
            f"{summary.succeeded} succeeded, {summary.failed} failed, "
            f"{summary.skipped} skipped, {summary.not_started} not started"
            + (f", {summary.requeued} left to the requeue" if summary.requeued else "")
            + f" {pace(progress)}"
        )
        every = f"saturn status {shlex.quote(files[0] if files else str(output))}" + (
            " (and each other FILE)" if len(files) > 1 else ""
        )
        for line in failure_lines(progress, every):
            print(line)
        for trigger in summary.halted_by:
            print(f"halted: {trigger} failed; the runs not started record nothing")
    code = summary.exit_code
    sys.exit(0 if code == 1 and failed_runs_exit_zero else code)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _load(
    files: tuple[str, ...],
    commands: str | None,
    output: str | None,
    nprocs: int | None,
    max_input_size: int | None,
) -> list[Batch]:
    if commands is None:
        if output is not None:
            raise InputError("goes with --commands FILE", source="--output")
        if not files:
            raise InputError("give batch FILEs, or --commands FILE -o DIR", source="batch")
        data = remote_inputs(list(files), max_input_size)
        return load_batch_files(
            list(files), nprocs=nprocs, max_input_size=max_input_size, data=data
        )
    if files:
        raise InputError("give batch FILEs or --commands, not both", source="--commands")
    if output is None:
        raise InputError("needs --output DIR (-o): where the runs' outputs go", source="--commands")
    slots = nprocs or os.cpu_count() or 1
    return [load_command_list(commands, output=output, nprocs=slots, max_input_size=max_input_size)]


async def _supervise(
    batches: list[Batch],
    slots: int,
    options: dict[str, Any],
    display: bool | None,
    logger: AttemptLogger | None,
) -> tuple[BatchSummary, SweepProgress]:
    supervisor = Supervisor(slots, **options)
    supervisor.on_attempt_end = logger
    async with anyio.create_task_group() as tg:
        tg.start_soon(forward_stop_signals, supervisor)
        if display is not None:
            tg.start_soon(show_progress, supervisor.progress, display)
        summary = await supervisor.run(batches)
        tg.cancel_scope.cancel()
    return summary, supervisor.progress
