"""Following a sweep from the client, shared by ``run`` and ``collect``."""

from __future__ import annotations

import sys
from collections.abc import Callable

import anyio
import click

from saturn_async.cli.progress import failure_lines, pace, show_progress
from saturn_async.cli.stop_signals import StopSignals
from saturn_async.executors.abc import Executor
from saturn_async.supervisor.halt import Halt
from saturn_async.supervisor.progress import SweepProgress
from saturn_async.sweep.follow import FollowOutcome, follow
from saturn_async.sweep.receivers import results_receiver
from saturn_async.sweep.state import SweepRecord, TaskCommands, save_record


async def follow_sweep(
    record: SweepRecord,
    executor: Executor,
    quiet: bool,
    stops: StopSignals,
    finished: Callable[[str], None] | None = None,
    halt: Halt | None = None,
) -> int:
    """Follow until every task has a status; exit code 0 all succeeded, else 1.
    ``finished(location)`` is called as each task is seen to have one. When ``halt``
    goes off, the sweep is terminated and its tasks not started stay without a status.

    SIGINT, SIGTERM, SIGHUP, SIGQUIT (``stops``): a detaching executor leaves the sweep
    running; others stop its runs (TERM, then KILL after the grace).
    """
    display = None if quiet else sys.stdout.isatty()
    progress = SweepProgress(total=len(record.tasks))
    commands = TaskCommands(record.name)
    outcome: FollowOutcome | None = None
    async with results_receiver(record, executor) as receiver:
        receive = receiver.receive if receiver is not None else None
        with stops.scope():
            async with anyio.create_task_group() as tg:
                if display is not None:
                    tg.start_soon(show_progress, progress, display)
                outcome = await follow(
                    record,
                    executor,
                    progress,
                    receive,
                    commands,
                    finished,
                    halt,
                    show_running=display is not None,
                )
                tg.cancel_scope.cancel()
    if outcome is None:
        assert stops.signum is not None
        return await interrupted(record, executor, stops.signum)
    for error in outcome.errors:
        click.echo(f"saturn: {error}", err=True)
    if halt is not None and halt.halted:
        click.echo(f"saturn: {halt.describe()}", err=True)
        record.halted_by = halt.trigger
        await anyio.to_thread.run_sync(save_record, record)
    elif outcome.unfinished:
        click.echo(
            f"saturn: {len(outcome.unfinished)} tasks have no status and no batch is left to "
            f"give them one (first: {outcome.unfinished[0]})",
            err=True,
        )
    if not quiet:
        print(
            f"{progress.succeeded} succeeded, {progress.failed} failed, "
            f"{len(outcome.unfinished)} unfinished of {progress.total} tasks "
            f"{pace(progress)}; outputs in {record.results_root}"
        )
        for line in failure_lines(progress, f"saturn status --name {record.name}"):
            print(line)
        if halt is not None and halt.halted:
            print(f"halted: {halt.trigger} failed; the tasks not started record nothing")
    return 0 if progress.failed == 0 and not outcome.unfinished else 1


async def interrupted(record: SweepRecord, executor: Executor, signum: int) -> int:
    """Detach, or stop the sweep's runs when they cannot outlive this process (leaving
    the executor then waits for them: further stop signals do nothing meanwhile)."""
    if executor.detaches:
        click.echo(
            f"saturn: detached; the sweep keeps running. Reattach with: "
            f"saturn collect --name {record.name}",
            err=True,
        )
        return 128 + signum
    click.echo("saturn: stopping the sweep's runs (TERM, then KILL after the grace)", err=True)
    await executor.terminate()
    return 128 + signum
