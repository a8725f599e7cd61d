"""``saturn status PATH``: counts and failed runs of a batch file or output directory."""

from __future__ import annotations

import sys

import click
import msgspec
from rich.console import Console
from rich.table import Table

from saturn_async.cli.options import max_input_size_option
from saturn_async.exceptions import InputError
from saturn_async.status import status_of, status_of_tasks
from saturn_async.sweep.state import load_record


@click.command()
@click.argument("path", type=click.Path(exists=False), required=False)
@click.option("--name", help="A sweep started by `saturn run` (instead of PATH).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts.")
@max_input_size_option
def status(path: str | None, name: str | None, as_json: bool, max_input_size: int | None) -> None:
    """Show what succeeded, what failed and what is not finished.

    PATH is a batch (or job) file, whose runs' output paths are read, or an output
    directory, searched for run directories (those holding stdout, stderr, log, events,
    status_code or status). With --name, the tasks of that sweep. Runs with no status
    are "lost" when the supervisor that ran them died (their lease says so; local
    outputs, s3:// runs of a batch file), else "not finished": not started, or running.
    `saturn batch --skip-completed` runs lost runs again.
    """
    if (path is None) == (name is None):
        raise InputError("give a PATH or --name, not both and not neither", source="status")
    if path is not None:
        report = status_of(path, max_input_size)
    else:
        record = load_record(name or "")
        report = status_of_tasks(record.tasks, record.results_root)
    if as_json:
        document = {
            "total": report.total,
            "succeeded": report.succeeded,
            "failed": len(report.failed),
            "lost": len(report.lost),
            "not_finished": len(report.not_finished),
            "failed_runs": report.failed,
            "lost_runs": report.lost,
            "not_finished_runs": report.not_finished,
        }
        sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(document)) + b"\n")
        return
    console = Console()
    lost_count = f"[yellow]{len(report.lost)} lost[/], " if report.lost else ""
    console.print(
        f"[green]{report.succeeded} succeeded[/], [red]{len(report.failed)} failed[/], "
        f"{lost_count}{len(report.not_finished)} not finished, of {report.total} runs",
        highlight=False,
    )
    if report.failed:
        table = Table(title="failed runs", title_justify="left")
        table.add_column("exit code", justify="right")
        table.add_column("path", overflow="fold")
        table.add_column("command", overflow="fold")
        for failed in report.failed:
            table.add_row(str(failed.status_code), failed.path, failed.cmd or "?")
        console.print(table)
    if report.lost:
        table = Table(title="lost runs (their supervisor died)", title_justify="left")
        table.add_column("host")
        table.add_column("pid", justify="right")
        table.add_column("path", overflow="fold")
        for run in report.lost:
            table.add_row(run.host, str(run.pid), run.path)
        console.print(table)
