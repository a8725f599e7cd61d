"""``saturn split RECIPE JOB OUTDIR``: batch files plus a recipe that runs them."""

from __future__ import annotations

import functools
from collections.abc import Callable

import anyio
import anyio.to_thread
import click

from saturn_async.cli.options import SLOTS, max_input_size_option
from saturn_async.split import SplitReport, split_job
from saturn_async.storage.inputs import read_remote_inputs


@click.command()
@click.argument("recipe", metavar="RECIPE")
@click.argument("job", metavar="JOB")
@click.argument("outdir", metavar="OUTDIR")
@click.option(
    "--batch-size", type=click.IntRange(min=1), help="Runs per batch [default: 3*nprocs]."
)
@click.option("--nprocs", type=SLOTS, help="Override the job's nprocs.")
@click.option("--remote-output-path", help="Override the job's remote_output_path.")
@click.option("--max-jobs", type=click.IntRange(min=0), help="Include at most this many runs.")
@click.option("--skip-completed", is_flag=True, help="Leave out runs whose status_code is 0.")
@click.option("--skip-failures", is_flag=True, help="Leave out runs with a non-zero status_code.")
@click.option(
    "--sync",
    "syncs",
    multiple=True,
    metavar="SRC[:DEST]",
    help="Pack SRC next to the batches; the recipe's start_script unpacks it to DEST "
    "[default DEST: SRC's absolute path]. Repeatable.",
)
@click.option(
    "--remote-commands-directory",
    help="Where the batch files are on the machines that run them [default: OUTDIR]. "
    "An s3:// URL: upload the batch files and --sync tarballs there; the start_script "
    "downloads them into OUTDIR's absolute path (aws CLI, else python -m saturn_async fetch).",
)
@click.option(
    "--indent",
    type=click.IntRange(min=1, max=8),
    help="Pretty-print the batch files with this many spaces [default: one line].",
)
@click.option(
    "--format",
    "script_format",
    type=click.Choice(["recipe", "slurm"]),
    default="recipe",
    show_default=True,
    help="slurm: write OUTDIR/slurm.sh, an sbatch script whose array task i runs batch "
    "file i, instead of recipe.yaml (RECIPE is then -).",
)
@max_input_size_option
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace existing files in OUTDIR that an earlier split did not write "
    "(never the JOB file itself).",
)
def split(
    recipe: str,
    job: str,
    outdir: str,
    batch_size: int | None,
    nprocs: int | None,
    remote_output_path: str | None,
    max_jobs: int | None,
    skip_completed: bool,
    skip_failures: bool,
    syncs: tuple[str, ...],
    remote_commands_directory: str | None,
    indent: int | None,
    script_format: str,
    max_input_size: int | None,
    overwrite: bool,
) -> None:
    """Split JOB (JSON or YAML) into OUTDIR/0.json ... OUTDIR/K.json and OUTDIR/recipe.yaml.

    RECIPE is a Saturn Cloud job recipe; the written recipe.yaml has spec.command set to
    one `sc batch <file>` line per batch file; with --format slurm, OUTDIR/slurm.sh, an
    sbatch script whose array task i runs batch file i (RECIPE is then -). Everything is
    validated before anything is written. Files in OUTDIR that an earlier split wrote
    (listed in OUTDIR/.saturn-split) are replaced, and its batch files beyond K removed;
    any other existing file that would be replaced is refused (exit 2) unless
    --overwrite, and nothing else is removed.
    """
    split = functools.partial(
        split_job,
        recipe,
        job,
        outdir,
        batch_size=batch_size,
        nprocs=nprocs,
        remote_output_path=remote_output_path,
        max_jobs=max_jobs,
        skip_completed=skip_completed,
        skip_failures=skip_failures,
        syncs=syncs,
        remote_commands_directory=remote_commands_directory,
        max_input_size=max_input_size,
        overwrite=overwrite,
        indent=indent,
        slurm=script_format == "slurm",
    )
    report = anyio.run(_split, split, job, max_input_size)
    for category, count in sorted(report.counts.items()):
        click.echo(f"{category}: {count}")
    files = "batch file" if report.batch_files == 1 else "batch files"
    written = "slurm.sh" if script_format == "slurm" else "recipe.yaml"
    click.echo(
        f"wrote {report.batch_files} {files} of up to {report.batch_size} runs "
        f"(nprocs {report.nprocs}) and {written} to {report.outdir}"
    )
    if report.shipped_to is not None:
        click.echo(f"uploaded the batch files and tarballs to {report.shipped_to}")
    if report.batch_files == 0:
        prog = click.get_current_context().find_root().info_name
        click.echo(
            f"{prog}: warning: no run is left to include, so recipe.yaml's spec.command is empty",
            err=True,
        )


async def _split(
    split: Callable[..., SplitReport], job: str, max_input_size: int | None
) -> SplitReport:
    """Split in a worker thread of this loop, which also reads an ``s3://`` JOB and
    ships the batch files (--remote-commands-directory)."""
    data = await read_remote_inputs([job], max_input_size)
    return await anyio.to_thread.run_sync(functools.partial(split, job_data=data.get(job)))
