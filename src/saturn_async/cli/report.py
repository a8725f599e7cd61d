"""``saturn report PATH`` / ``--name N``: one self-contained HTML page of a sweep's outputs."""

from __future__ import annotations

import os
import stat
import sys
import time
from collections.abc import Callable

import anyio
import click

from saturn_async.cli.options import max_input_size_option
from saturn_async.exceptions import InputError, MissingExtraError
from saturn_async.runs_index import check_outside_runs, refuse_remote, runs_of
from saturn_async.spec.paths import is_remote, normalize_location
from saturn_async.storage import storage_for
from saturn_async.storage.local import read_regular, write_atomically


@click.command()
@click.argument("path", type=click.Path(exists=False), required=False)
@click.option("--name", help="A sweep started by `saturn run` (instead of PATH).")
@click.option(
    "--output",
    "-o",
    default="report.html",
    show_default=True,
    help="Where to write the page: a file, or an s3:// URL. An existing file is replaced "
    "only if it is a saturn report.",
)
@max_input_size_option
def report(path: str | None, name: str | None, output: str, max_input_size: int | None) -> None:
    """Write one HTML page about the runs of PATH or of sweep --name: the counts, a
    timeline of slots (aggregated into cells past 3,000 attempts), a histogram of
    durations, failures grouped by exit code with the last lines of their stderr, and
    peak memory and CPU per run. The page loads nothing from the network. PATH is
    what `saturn status` takes (local outputs only). Needs the `report` extra
    (matplotlib).
    """
    if (path is None) == (name is None):
        raise InputError("give a PATH or --name, not both and not neither", source="report")
    try:
        from saturn_async.report.data import gather
        from saturn_async.report.html import MARKER, render
    except ImportError as exc:
        raise MissingExtraError("saturn report", "report") from exc
    started = time.monotonic()
    runs = runs_of(path, name, max_input_size)
    refuse_remote(runs, "report")
    prefix = f"<!DOCTYPE html>\n{MARKER}\n".encode()

    def page() -> bytes:
        return render(gather(path or f"sweep {name}", runs)).encode()

    if is_remote(output):
        output = normalize_location(output, source="--output", field="")
        data = anyio.run(_write_remote, output, prefix, page)
    else:
        check_outside_runs(output, (location for location, _, _ in runs), "--output")
        _check_local(output, prefix)
        data = page()
        write_atomically(output, data)
    print(
        f"wrote {output}: {len(runs):,} runs, {len(data) / 1024:,.0f} KiB, "
        f"in {time.monotonic() - started:.1f} s",
        file=sys.stderr,
    )


def _check_local(output: str, prefix: bytes) -> None:
    """Refuse a destination that is not ours to replace, or cannot be written."""
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise InputError(f"{output}: no such directory {parent}", source="--output")
    try:
        info = os.stat(output, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{output} exists and is not a regular file", source="--output")
    if read_regular(output, len(prefix)) != prefix:
        raise InputError(
            f"{output} exists and is not a saturn report; saturn replaces only its own",
            source="--output",
        )


async def _write_remote(output: str, prefix: bytes, page: Callable[[], bytes]) -> bytes:
    """Refuse an object that is not a saturn report, then replace it with ``page()``
    (one client for both); returns what was written."""
    async with storage_for(output) as storage:
        await storage.check(output)
        existing = await storage.get_range(output, 0, len(prefix))
        if existing is not None and existing != prefix:
            raise InputError(
                f"{output} exists and is not a saturn report; saturn replaces only its own",
                source="--output",
            )
        data = page()
        await storage.put(output, data)
    return data
