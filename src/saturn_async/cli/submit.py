"""``saturn submit FILE...``: hand batch files to the daemon on this machine."""

from __future__ import annotations

import os

import anyio
import click

from saturn_async.cli.options import daemon_options, halt_option, max_input_size_option
from saturn_async.cli.remote_inputs import remote_inputs
from saturn_async.daemon import protocol
from saturn_async.daemon.client import request
from saturn_async.daemon.paths import daemon_paths
from saturn_async.spec import load_batch_files
from saturn_async.spec.halt import HaltPolicy
from saturn_async.spec.paths import is_remote


@click.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@daemon_options
@halt_option("each batch FILE on its own (it replaces the file's halt:)")
@max_input_size_option
def submit(
    files: tuple[str, ...],
    name: str,
    socket: str | None,
    halt: HaltPolicy | None,
    max_input_size: int | None,
) -> None:
    """Queue every run of every batch FILE on the daemon; print each batch's id.

    The files are read and checked here (bad input: one line, exit 2, nothing queued),
    then queued together. Runs start in submission order as the daemon's slots free up;
    they get the daemon's environment plus the batch's env. A file already queued or
    running is refused (cancel it first). A halt (--halt, or the file's halt:) stops
    that batch's runs only.
    """
    paths = daemon_paths(name, socket=socket)
    data = remote_inputs(list(files), max_input_size)
    batches = load_batch_files(list(files), max_input_size=max_input_size, data=data)
    if halt is not None:
        for batch in batches:
            batch.halt = str(halt)
    message = protocol.Submit(
        batches=[
            protocol.SubmittedBatch(source=_source(path), batch=batch)
            for path, batch in zip(files, batches, strict=True)
        ]
    )
    reply = anyio.run(request, paths.socket, message)
    assert isinstance(reply, protocol.Accepted)
    for batch_id, path, batch in zip(reply.ids, files, batches, strict=True):
        click.echo(f"{batch_id}\t{len(batch.runs)} runs\t{path}")


def _source(path: str) -> str:
    return path if is_remote(path) else os.path.abspath(path)
