"""``saturn drain``: let the daemon finish what runs, take nothing new, then exit."""

from __future__ import annotations

import math

import anyio
import click

from saturn_async.cli.options import FiniteRange, daemon_options
from saturn_async.daemon import protocol
from saturn_async.daemon.client import request
from saturn_async.daemon.paths import daemon_paths
from saturn_async.exceptions import DaemonError

_POLL = 0.2


@click.command()
@daemon_options
@click.option("--wait", is_flag=True, help="Return once the daemon has exited.")
@click.option(
    "--timeout",
    type=FiniteRange(min=0),
    help="With --wait: give up after this many seconds (exit 1).",
)
def drain(name: str, socket: str | None, wait: bool, timeout: float | None) -> None:
    """Running runs finish; no queued run starts and no batch is accepted; then the
    daemon exits. Queued runs stay in its journal and run when it starts again."""
    paths = daemon_paths(name, socket=socket)
    anyio.run(_drain, paths.socket, wait, timeout)


async def _drain(socket: str, wait: bool, give_up_after: float | None) -> None:
    reply = await request(socket, protocol.Drain())
    assert isinstance(reply, protocol.Draining)
    click.echo(f"draining: {reply.running} running, {reply.queued} queued stay queued")
    if not wait:
        return
    with anyio.move_on_after(math.inf if give_up_after is None else give_up_after):
        while True:
            try:
                await request(socket, protocol.Ps())
            except DaemonError:
                click.echo("the daemon has exited")
                return
            await anyio.sleep(_POLL)
    click.echo(f"the daemon is still draining after {give_up_after:g} s", err=True)
    raise SystemExit(1)
