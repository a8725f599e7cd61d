"""Progress displays: a rich live view on a terminal, plain lines otherwise."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import TYPE_CHECKING

import anyio

from saturn_async.supervisor.progress import SweepProgress

if TYPE_CHECKING:
    from rich.console import Group

# How often the plain (non-terminal) display prints a line.
PLAIN_INTERVAL = 5.0
# How many running runs the live view lists.
_SHOWN_RUNNING = 12


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def summary_line(p: SweepProgress) -> str:
    return (
        f"{p.succeeded} succeeded, {p.failed} failed, {p.skipped} skipped, "
        f"{len(p.running)} running, {p.pending} pending of {p.total} | "
        f"{p.rate():.1f} runs/s | ETA {duration(p.eta_seconds())}"
    )


def pace(p: SweepProgress) -> str:
    """How long it took and how fast, for the end summary."""
    return f"in {duration(time.monotonic() - p.started)} ({p.rate():.1f} runs/s)"


def render(p: SweepProgress) -> Group:
    # rich is imported here, not at the top: `saturn batch -q` and plain output skip it.
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    counts = Text.assemble(
        (f"{p.succeeded} succeeded", "green"),
        "  ",
        (f"{p.failed} failed", "red" if p.failed else "dim"),
        "  ",
        (f"{p.skipped} skipped", "dim"),
        "  ",
        (f"{len(p.running)} running", "cyan"),
        "  ",
        f"{p.pending} pending of {p.total}",
        "  |  ",
        f"{p.rate():.1f} runs/s",
        "  ETA ",
        duration(p.eta_seconds()),
    )
    if not p.running:
        return Group(counts)
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    table.add_column(p.running_label, justify="right", no_wrap=True)
    table.add_column("elapsed", justify="right", no_wrap=True)
    table.add_column("command", no_wrap=True, overflow="ellipsis")
    now = time.monotonic()
    shown = sorted(p.running.items(), key=lambda item: (item[1].started, str(item[0])))
    for key, run in shown[:_SHOWN_RUNNING]:
        name = str(key) if isinstance(key, int) else key.rsplit("/", 1)[-1]
        table.add_row(name, duration(now - run.started), run.label)
    if len(shown) > _SHOWN_RUNNING:
        table.add_row(f"+{len(shown) - _SHOWN_RUNNING} more", "", "", style="dim")
    return Group(counts, table)


def failed_run_line(status_code: int, path: str, cmd: str | None) -> str:
    """One failed run on one line, never wrapped (paths stay whole for copying); control
    characters in the command (newlines of a multi-line one) are shown escaped."""
    shown = "?" if cmd is None else cmd if cmd.isprintable() else _escaped(cmd)
    return f"  {status_code}  {path}  {shown}"


def lost_run_line(host: str, pid: int, path: str) -> str:
    """One lost run on one line: the host and pid of its dead supervisor (as its lease,
    which the run could write, says: shown escaped), and its path."""
    return f"  {_escaped(host)}  {pid}  {path}"


def _escaped(text: str) -> str:
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def failure_lines(p: SweepProgress, all_of_them: str) -> list[str]:
    """The end summary's list of failed runs: the first few (``first_failures``), then
    how many more there are and the command (``all_of_them``) that lists every one."""
    if not p.failed:
        return []
    lines = ["failed (exit code, output path, command):"]
    lines += [failed_run_line(f.status_code, f.path, f.cmd) for f in p.first_failures]
    more = p.failed - len(p.first_failures)
    lines.append(f"  ... {more} more; all of them: {all_of_them}" if more else f"  {all_of_them}")
    return lines


async def show_progress(progress: SweepProgress, live: bool) -> None:
    """Display ``progress`` until cancelled: live on a terminal, else a line every 5 s.

    A terminal that went away (EIO, after SIGHUP) or a closed pipe ends the display,
    never the batch or sweep it shows.
    """
    with contextlib.suppress(OSError):
        await _show_progress(progress, live)


async def _show_progress(progress: SweepProgress, live: bool) -> None:
    if live:
        from rich.console import Console
        from rich.live import Live

        with Live(render(progress), console=Console(), auto_refresh=False) as view:
            try:
                while True:
                    await anyio.sleep(0.25)
                    view.update(render(progress), refresh=True)
            finally:
                # The last frame shows the end, not the moment of the last refresh.
                view.update(render(progress), refresh=True)
    while True:
        await anyio.sleep(PLAIN_INTERVAL)
        print(summary_line(progress), file=sys.stderr, flush=True)
