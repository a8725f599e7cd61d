"""``saturn collect --name NAME``: reattach to a sweep and follow it to the end."""

from __future__ import annotations

import sys

import anyio
import click

from saturn_async.cli.following import follow_sweep
from saturn_async.cli.stop_signals import receive_stop_signals
from saturn_async.executors.registry import open_executor
from saturn_async.sweep.state import load_record


@click.command()
@click.option("--name", required=True, help="The sweep's name.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
def collect(name: str, quiet: bool) -> None:
    """Follow sweep NAME until every task has a status, gathering outputs where needed.

    With results class_spec Dask, this writes what the workers sent into the results
    directory. Exit code: 0 all succeeded, 1 some failed or never finished.
    """
    sys.exit(anyio.run(_collect, name, quiet))


async def _collect(name: str, quiet: bool) -> int:
    async with receive_stop_signals() as stops:
        record = load_record(name)
        async with open_executor(record) as executor:
            code = await follow_sweep(record, executor, quiet, stops)
            if code in (0, 1):
                await executor.forget()
            return code
