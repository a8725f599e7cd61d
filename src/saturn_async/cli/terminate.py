"""``saturn terminate --name NAME``: stop every run of a sweep, wherever it runs."""

from __future__ import annotations

import anyio
import anyio.to_thread
import click

from saturn_async.cli.options import FiniteRange
from saturn_async.executors.abc import Executor
from saturn_async.executors.local import OnClientMachine
from saturn_async.executors.registry import open_executor
from saturn_async.status import without_status
from saturn_async.supervisor.watchdog import groups_marked, stop_groups
from saturn_async.sweep.follow import POLL, mark_terminated
from saturn_async.sweep.receivers import results_receiver
from saturn_async.sweep.state import SweepRecord, load_record, task_commands

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

    When the sweep's `saturn run` process is gone (executors on this machine), the runs
    it left are found and stopped here; if some cannot be, that is said and the exit
    code is 1. Every task without a status then gets status failure, error 143 and a
    terminated event, so the sweep is complete and `saturn status` counts it. Prints how
    many tasks had not finished: stopped while running, and never started.
    """
    anyio.run(_terminate, name, wait)


async def _terminate(name: str, wait: float | None) -> None:
    record = load_record(name)
    if wait is None:
        wait = float(record.handle.get("grace", 10.0)) + _MARGIN
    async with open_executor(record) as executor:
        unfinished = await without_status(record.results_root, record.tasks)
        await executor.terminate()
        await _stop_runs_of_a_dead_client(record, executor)
        async with results_receiver(record, executor) as receiver:
            with anyio.move_on_after(wait):
                while (outstanding := await executor.outstanding()).batches:
                    if receiver is not None:
                        await receiver.receive()
                    await anyio.sleep(POLL)
                if outstanding.lost:  # the engine lost the sweep: say why, and what it meant
                    for line in outstanding.errors:
                        click.echo(f"saturn: {line}", err=True)
            if receiver is not None:
                await receiver.receive()
        left = await without_status(record.results_root, unfinished)
        commands = task_commands(name)
        await mark_terminated(record.results_root, left, record.created, commands)
        await executor.forget()
    click.echo(
        f"terminated {name}: {len(unfinished)} tasks had not finished "
        f"({len(unfinished) - len(left)} were stopped or ended, {len(left)} never started)"
    )


async def _stop_runs_of_a_dead_client(record: SweepRecord, executor: Executor) -> None:
    """When the sweep's runs lived in a ``saturn run`` process that is gone, stop what is
    left of them here (its watchdog normally did), and say which it was."""
    if not isinstance(executor, OnClientMachine) or executor.client_alive():
        return
    gone = f"the client of sweep {record.name} (pid {record.client_pid}) is gone"
    locations = {task.encode() for task in record.tasks}
    marker = b"SATURN_RUN_REMOTE_OUTPUT_PATH"
    groups = await anyio.to_thread.run_sync(groups_marked, marker, locations)
    if not groups:
        click.echo(f"{gone}; none of its runs is running")
        return
    grace = float(record.handle.get("grace", 10.0))
    survivors = await stop_groups(sorted(groups), grace)
    if survivors:
        listed = " ".join(map(str, survivors))
        click.echo(f"terminate: error: {gone}; could not stop process groups {listed}", err=True)
        raise click.exceptions.Exit(1)
    click.echo(f"{gone}; stopped the {len(groups)} of its runs still running")
