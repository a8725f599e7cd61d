"""``saturn collect --name NAME``: reattach to a sweep and follow it to the end."""

from __future__ import annotations

import sys

import click

from saturn_async.cli.following import follow_sweep
from saturn_async.executors import open_executor
from saturn_async.sweep.state import load_record


@click.command()
@click.option("--name", required=True, help="The sweep's name.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
def collect(name: str, quiet: bool) -> None:
    """Follow sweep NAME until every task has a status, gathering outputs where needed.

    With results class_spec Dask, this writes what the workers sent into the results
    directory. Exit code: 0 all succeeded, 1 some failed or never finished.
    """
    record = load_record(name)
    with open_executor(record) as executor:
        code = follow_sweep(record, executor, quiet)
        if code in (0, 1):
            executor.forget()
    sys.exit(code)
