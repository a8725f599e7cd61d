"""``saturn watch``: a live view of the daemon's slots and progress."""

from __future__ import annotations

import anyio
import click
from rich.console import Console
from rich.live import Live

from saturn_async.cli.daemon_view import render_snapshot
from saturn_async.cli.options import FiniteRange, daemon_options
from saturn_async.daemon import protocol
from saturn_async.daemon.client import request
from saturn_async.daemon.paths import daemon_paths
from saturn_async.exceptions import DaemonError


@click.command()
@daemon_options
@click.option(
    "--interval", type=FiniteRange(min=0.1), default=0.5, show_default=True,
    help="Seconds between updates.",
)  # fmt: skip
def watch(name: str, socket: str | None, interval: float) -> None:
    """Follow the daemon live until Ctrl-C, or until it exits."""
    paths = daemon_paths(name, socket=socket)
    anyio.run(_watch, paths.socket, interval)


async def _watch(socket_path: str, interval: float) -> None:
    snapshot = await request(socket_path, protocol.Ps())
    assert isinstance(snapshot, protocol.Snapshot)
    console = Console()
    with Live(render_snapshot(snapshot, max_runs=_rows(console)), console=console) as view:
        while True:
            await anyio.sleep(interval)
            try:
                snapshot = await request(socket_path, protocol.Ps())
            except DaemonError:
                view.console.print("the daemon has exited")
                return
            assert isinstance(snapshot, protocol.Snapshot)
            view.update(render_snapshot(snapshot, max_runs=_rows(console)), refresh=True)


def _rows(console: Console) -> int:
    return max(console.size.height - 12, 4)
