"""``saturn terminate --name NAME``: stop every run of a sweep, wherever it runs."""

from __future__ import annotations

import time

import anyio
import click

from saturn_async.cli.options import FiniteRange
from saturn_async.executors import open_executor
from saturn_async.status import status_reader
from saturn_async.sweep.follow import POLL, mark_terminated, open_drain
from saturn_async.sweep.state import load_record, task_commands

# How long to wait for batches to stop beyond the runs' grace period.
_MARGIN = 60.0


@click.command()
@click.option("--name", required=True, help="The sweep's name.")
@click.option(
    "--wait",
    type=FiniteRange(min=0),
    help="Seconds to wait for running batches to stop before marking the rest "
    "[default: the sweep's --grace + 60].",
)
def terminate(name: str, wait: float | None) -> None:
    """Stop sweep NAME: cancel queued batches, TERM (then KILL) running runs.

    Every task without a status then gets status failure, error 143 and a terminated
    event, so the sweep is complete and `saturn status` counts it. Prints how many tasks
    had not finished: stopped while running, and never started.
    """
    record = load_record(name)
    if wait is None:
        wait = float(record.handle.get("grace", 10.0)) + _MARGIN
    with open_executor(record) as executor:
        lookup = status_reader(record.results_root)
        unfinished = [task for task in record.tasks if lookup(task) is None]
        executor.terminate()
        drain = open_drain(record, executor)
        try:
            deadline = time.monotonic() + wait
            while executor.outstanding().batches and time.monotonic() < deadline:
                if drain is not None:
                    drain.drain()
                time.sleep(POLL)
            if drain is not None:
                drain.drain()
        finally:
            if drain is not None:
                drain.close()
        lookup = status_reader(record.results_root)
        left = [task for task in unfinished if lookup(task) is None]
        commands = task_commands(name)
        anyio.run(mark_terminated, record.results_root, left, record.created, commands)
        executor.forget()
    click.echo(
        f"terminated {name}: {len(unfinished)} tasks had not finished "
        f"({len(unfinished) - len(left)} were stopped or ended, {len(left)} never started)"
    )
