"""``saturn status PATH``: counts and failed runs of a batch file or output directory."""

from __future__ import annotations

import sys

import anyio
import click
import msgspec
from rich.console import Console

from saturn_async.cli.options import max_input_size_option
from saturn_async.cli.progress import failed_run_line, lost_run_line
from saturn_async.exceptions import InputError
from saturn_async.joblog import write_outputs_joblog
from saturn_async.report.data import gather
from saturn_async.runs_index import refuse_remote, runs_of
from saturn_async.status import status_of, status_of_sweep
from saturn_async.sweep.state import load_record
from saturn_async.usage_summary import (
    Machine,
    UsageSummary,
    parse_machine,
    summarize,
    summary_lines,
    this_machine,
)


@click.command()
@click.argument("path", type=click.Path(exists=False), required=False)
@click.option("--name", help="A sweep started by `saturn run` (instead of PATH).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts.")
@click.option(
    "--joblog",
    type=click.Path(dir_okay=False),
    help="Also write the finished runs' attempts to FILE in GNU parallel's --joblog "
    "format, from their events (local outputs only; appends to an existing joblog).",
)
@click.option(
    "--usage",
    is_flag=True,
    help="Also summarize peak memory and CPU per run (median, p95, max) and suggest "
    "nprocs for a machine (local outputs only).",
)
@click.option(
    "--for-machine",
    metavar="CORESc,MEMORY",
    help="With --usage: the machine to suggest nprocs for (96c,192G) [default: this one].",
)
@max_input_size_option
def status(
    path: str | None,
    name: str | None,
    as_json: bool,
    joblog: str | None,
    usage: bool,
    for_machine: str | None,
    max_input_size: int | None,
) -> None:
    """Show what succeeded, what failed and what is not finished.

    PATH is a batch (or job) file, whose runs' output paths are read, or an output
    directory, searched for run directories (those holding stdout, stderr, log, events,
    status_code or status). With --name, the tasks of that sweep. Runs with no status
    are "lost" when the supervisor that ran them died (their lease says so; local
    outputs, s3:// runs of a batch file), else "not finished": not started, or running.
    `saturn batch --skip-completed` runs lost runs again. Failed and lost runs are listed
    one a line, never wrapped.
    """
    if (path is None) == (name is None):
        raise InputError("give a PATH or --name, not both and not neither", source="status")
    if for_machine is not None and not usage:
        raise InputError("goes with --usage", source="--for-machine")
    machine = parse_machine(for_machine) if for_machine is not None else this_machine()
    if joblog is not None:
        write_outputs_joblog(joblog, runs_of(path, name, max_input_size))
    summary = usage_of(path, name, max_input_size, machine) if usage else None
    if path is not None:
        report = anyio.run(status_of, path, max_input_size)
    else:
        record = load_record(name or "")
        report = anyio.run(status_of_sweep, record)
        report.add_halt(record.halted_by)
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
            "halted_by": report.halted_by,
        }
        if summary is not None:
            document["usage"] = summary
        sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(document)) + b"\n")
        return
    lost_count = f"[yellow]{len(report.lost)} lost[/], " if report.lost else ""
    Console(soft_wrap=True).print(
        f"[green]{report.succeeded} succeeded[/], [red]{len(report.failed)} failed[/], "
        f"{lost_count}{len(report.not_finished)} not finished, of {report.total} runs",
        highlight=False,
    )
    if report.failed:
        # Plain lines, not a table: at any width, or piped, paths are never cut.
        lines = ["failed runs (exit code, path, command):"]
        lines += [failed_run_line(f.status_code, f.path, f.cmd) for f in report.failed]
        lines += [f"halted by the failure of {trigger}" for trigger in report.halted_by]
        sys.stdout.write("\n".join(lines) + "\n")
    if report.lost:
        lines = ["lost runs (their supervisor died; host, pid, path):"]
        lines += [lost_run_line(run.host, run.pid, run.path) for run in report.lost]
        sys.stdout.write("\n".join(lines) + "\n")
    if summary is not None:
        sys.stdout.write("\n".join(summary_lines(summary)) + "\n")


def usage_of(
    path: str | None, name: str | None, max_input_size: int | None, machine: Machine
) -> UsageSummary:
    runs = runs_of(path, name, max_input_size)
    refuse_remote(runs, "--usage")
    return summarize(gather("", runs).usage, machine)
