"""``saturn batch FILE...``: run batch files on this machine, nprocs runs at a time."""

from __future__ import annotations

import sys
from typing import Any

import anyio
import click

from saturn_async.cli.options import (
    SLOTS,
    grace_option,
    log_chunk_minutes_option,
    max_input_size_option,
)
from saturn_async.cli.progress import show_progress, summary_line
from saturn_async.cli.stop_signals import forward_stop_signals
from saturn_async.spec import Batch, load_batch_files
from saturn_async.supervisor import BatchSummary, Supervisor, slot_count


@click.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--nprocs", type=SLOTS, help="Slots (default: largest nprocs).")
@grace_option
@click.option(
    "--skip-completed",
    is_flag=True,
    help="Skip runs whose status_code is 0; lost runs (their supervisor died) run again.",
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
@max_input_size_option
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
def batch(
    files: tuple[str, ...],
    nprocs: int | None,
    grace: float,
    skip_completed: bool,
    wait_for_owner: bool,
    log_chunk_minutes: float,
    staging_dir: str | None,
    failed_runs_exit_zero: bool,
    max_input_size: int | None,
    quiet: bool,
) -> None:
    """Run every run of every batch FILE with at most nprocs at a time.

    Slots are shared across files. Each run is `sh -c CMD` in its own process group;
    its stdout, stderr, events and results go to its remote_output_path, and status_code
    is written last. For s3:// paths, logs are shipped as numbered chunks while the run
    runs (see `saturn logs`). Exit code: 0 all succeeded, 1 some failed, 2 bad input (nothing
    started), 128+N when interrupted by signal N (130 INT, 143 TERM, 129 HUP: a closed
    terminal stops the runs like TERM). A second signal, or a first SIGQUIT (131), skips
    the grace period and stops retrying S3 (an outcome not uploaded is kept in the
    staging dir). A run another live supervisor is running is skipped (one line says
    how many), or waited for with --wait-for-owner; never run twice at once.
    """
    batches = load_batch_files(list(files), nprocs=nprocs, max_input_size=max_input_size)
    slots = slot_count(batches, nprocs)
    display = None if quiet else sys.stdout.isatty()
    supervisor_options = {
        "grace": grace,
        "skip_completed": skip_completed,
        "wait_for_owner": wait_for_owner,
        "log_chunk_seconds": log_chunk_minutes * 60,
        "staging_dir": staging_dir,
    }
    summary = anyio.run(_supervise, batches, slots, supervisor_options, display)
    if not quiet:
        print(
            f"{summary.succeeded} succeeded, {summary.failed} failed, "
            f"{summary.skipped} skipped, {summary.not_started} not started"
        )
    code = summary.exit_code
    sys.exit(0 if code == 1 and failed_runs_exit_zero else code)


async def _supervise(
    batches: list[Batch], slots: int, options: dict[str, Any], display: bool | None
) -> BatchSummary:
    supervisor = Supervisor(slots, **options)
    async with anyio.create_task_group() as tg:
        tg.start_soon(forward_stop_signals, supervisor)
        if display is not None:
            tg.start_soon(show_progress, supervisor.progress, display)
        summary = await supervisor.run(batches)
        tg.cancel_scope.cancel()
    if display is False:
        print(summary_line(supervisor.progress), file=sys.stderr)
    return summary
