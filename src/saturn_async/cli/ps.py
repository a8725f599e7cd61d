"""``saturn ps``: the daemon's batches and runs: queued, running, done, failed."""

from __future__ import annotations

import sys

import anyio
import click
import msgspec
from rich.console import Console

from saturn_async.cli.daemon_view import render_snapshot
from saturn_async.cli.options import daemon_options
from saturn_async.daemon import protocol
from saturn_async.daemon.client import request
from saturn_async.daemon.paths import daemon_paths


@click.command()
@daemon_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object (see docs/operations.md).")
def ps(name: str, socket: str | None, as_json: bool) -> None:
    """Show the daemon's state, its batches (live ones and the last 100 finished) and
    its running runs."""
    paths = daemon_paths(name, socket=socket)
    snapshot = anyio.run(request, paths.socket, protocol.Ps())
    assert isinstance(snapshot, protocol.Snapshot)
    if as_json:
        sys.stdout.buffer.write(msgspec.json.encode(snapshot) + b"\n")
        return
    Console(soft_wrap=True).print(render_snapshot(snapshot))
