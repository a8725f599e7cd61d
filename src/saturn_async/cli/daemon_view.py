"""How ``saturn ps`` and ``saturn watch`` show a daemon's snapshot."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from saturn_async.cli.progress import duration
from saturn_async.daemon.protocol import Snapshot

_STATE_STYLE = {"running": "green", "paused": "red", "draining": "yellow", "stopping": "yellow"}


def render_snapshot(snapshot: Snapshot, *, max_runs: int | None = None) -> Group:
    s = snapshot
    head = Text.assemble(
        f"daemon pid {s.pid} (saturn_async {s.version}): ",
        (s.state, _STATE_STYLE.get(s.state, "")),
        f" | {len(s.running)}/{s.nprocs} slots busy | {s.queued} queued | ",
        (f"{s.succeeded} succeeded", "green"),
        ", ",
        (f"{s.failed} failed", "red" if s.failed else ""),
    )
    parts: list[Text | Table] = [head]
    if s.paused_reason:
        parts.append(Text(f"paused: {s.paused_reason}", style="red"))
    if s.batches:
        batches = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("batch", "queued", "running", "succeeded", "failed", "cancelled", "lost"):
            batches.add_column(column, justify="left" if column == "batch" else "right")
        batches.add_column("of", justify="right")
        batches.add_column("source")
        for b in s.batches:
            batches.add_row(
                b.id,
                str(b.queued),
                str(b.running),
                str(b.succeeded),
                str(b.failed),
                str(b.cancelled),
                str(b.lost),
                str(b.total),
                b.source,
            )
        parts.append(batches)
        parts.extend(
            Text(f"{b.id} quarantined: {b.quarantined}", style="red")
            for b in s.batches
            if b.quarantined is not None
        )
    if s.running:
        runs = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("slot", "run", "attempt", "pid", "elapsed", "cmd"):
            runs.add_column(column, justify="left" if column in ("run", "cmd") else "right")
        shown = s.running if max_runs is None else s.running[:max_runs]
        for r in shown:
            runs.add_row(str(r.rank), r.id, str(r.attempt), str(r.pid), duration(r.seconds), r.cmd)
        parts.append(runs)
        if len(shown) < len(s.running):
            parts.append(Text(f"… and {len(s.running) - len(shown)} more running"))
    return Group(*parts)
