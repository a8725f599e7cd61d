"""``saturn logs LOCATION``: print a run's stdout or stderr, local or reassembled from S3."""

from __future__ import annotations

import sys

import anyio
import click

from saturn_async.logs.reader import copy_log
from saturn_async.spec.paths import normalize_location
from saturn_async.storage.layout import LOG, STDERR, STDOUT


@click.command()
@click.argument("location", metavar="PATH_OR_URL")
@click.option(
    "--stream",
    type=click.Choice([STDOUT, STDERR, LOG]),
    help="Which log to print [default: log for runs of `saturn run`, else stdout].",
)
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Keep printing new output until the run's status_code (or status) appears.",
)
def logs(location: str, stream: str | None, follow: bool) -> None:
    """Print a run's log. PATH_OR_URL is the run's output directory or URL.

    On a local path this is the plain file. On s3:// the log is stored as numbered
    chunks (stdout/000000, stdout/000001, ...), printed here in order as one stream.
    Runs of `saturn run` have one `log` with stdout and stderr interleaved (and no
    stdout or stderr: asking for those is exit 2). A path holding no run (a mistyped
    one, or a directory of runs) is exit 2.
    """
    run = normalize_location(location, source="PATH_OR_URL", field="")
    out = sys.stdout.buffer

    def write(data: bytes) -> None:
        out.write(data)
        out.flush()

    try:
        anyio.run(copy_log, run, stream, write, follow)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
