"""``saturn cancel TARGET...``: stop queued and running work on the daemon."""

from __future__ import annotations

import anyio
import click

from saturn_async.cli.options import daemon_options
from saturn_async.daemon import protocol
from saturn_async.daemon.client import request
from saturn_async.daemon.paths import daemon_paths


@click.command()
@click.argument("targets", nargs=-1, required=True, metavar="BATCH_OR_RUN...")
@daemon_options
def cancel(targets: tuple[str, ...], name: str, socket: str | None) -> None:
    """Cancel a batch (its id, like b7, or its file as submitted) or one run (its id,
    like b7.12, or its output path).

    Queued runs are dropped: they record nothing, so a later `split --skip-completed`
    includes them again. Running runs are stopped like `saturn batch` stops them (TERM,
    KILL after the grace) and record status 143 with a `terminated` event.
    """
    paths = daemon_paths(name, socket=socket)
    for target in targets:
        reply = anyio.run(request, paths.socket, protocol.Cancel(target=target))
        assert isinstance(reply, protocol.Cancelled)
        click.echo(f"{target}: cancelled {reply.queued} queued, stopping {reply.running} running")
