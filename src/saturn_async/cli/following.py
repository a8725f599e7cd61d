"""Following a sweep from the client, shared by ``run`` and ``collect``."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

import anyio
import click

from saturn_async.cli.progress import failure_lines, pace, show_progress
from saturn_async.cli.stop_signals import (
    STOP_SIGNALS,
    ignore_stop_signals,
    leave_terminal,
    signal_of,
)
from saturn_async.executors import Executor
from saturn_async.supervisor.progress import SweepProgress
from saturn_async.sweep.follow import FollowOutcome, follow, open_drain
from saturn_async.sweep.state import SweepRecord, task_commands


def follow_sweep(
    record: SweepRecord,
    executor: Executor,
    quiet: bool,
    finished: Callable[[str], None] | None = None,
) -> int:
    """Follow until every task has a status; exit code 0 all succeeded, else 1.
    ``finished(location)`` is called as each task is seen to have one.

    SIGINT, SIGTERM, SIGHUP, SIGQUIT: a detaching executor leaves the sweep running;
    others stop its runs (TERM, then KILL after the grace).
    """
    display = None if quiet else sys.stdout.isatty()
    progress = SweepProgress(total=len(record.tasks))
    commands = task_commands(record.name)
    drain = open_drain(record, executor)
    try:
        drain_now = drain.drain if drain is not None else None
        outcome, signum = anyio.run(
            _follow, record, executor, progress, drain_now, commands, display, finished
        )
    except KeyboardInterrupt as exc:  # before the signal receiver was in place
        outcome, signum = None, signal_of(exc)
    finally:
        if drain is not None:
            drain.close()
    if outcome is None:
        assert signum is not None
        return interrupted(record, executor, signum)
    for error in outcome.errors:
        click.echo(f"saturn: {error}", err=True)
    if outcome.unfinished:
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
    return 0 if progress.failed == 0 and not outcome.unfinished else 1


async def _follow(
    record: SweepRecord,
    executor: Executor,
    progress: SweepProgress,
    drain: Callable[[], object] | None,
    commands: dict[str, str],
    display: bool | None,
    finished: Callable[[str], None] | None,
) -> tuple[FollowOutcome | None, int | None]:
    """The outcome, or (None, signal) when one of STOP_SIGNALS came first."""
    received: list[int] = []
    outcome = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(_cancel_on_signal, tg.cancel_scope, received)
        if display is not None:
            tg.start_soon(show_progress, progress, display)
        outcome = await follow(
            record, executor, progress, drain, commands, finished, show_running=display is not None
        )
        tg.cancel_scope.cancel()
    return (None, received[0]) if received else (outcome, None)


async def _cancel_on_signal(scope: anyio.CancelScope, received: list[int]) -> None:
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                leave_terminal()
            received.append(signum)
            scope.cancel()
            return


def interrupted(record: SweepRecord, executor: Executor, signum: int) -> int:
    """Detach, or stop the sweep's runs when they cannot outlive this process."""
    if executor.detaches:
        click.echo(
            f"saturn: detached; the sweep keeps running. Reattach with: "
            f"saturn collect --name {record.name}",
            err=True,
        )
        return 128 + signum
    ignore_stop_signals()  # waiting below must not leave the runs behind
    click.echo("saturn: stopping the sweep's runs (TERM, then KILL after the grace)", err=True)
    executor.terminate()
    executor.close()
    return 128 + signum
