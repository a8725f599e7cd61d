"""The report's charts, drawn with matplotlib as inline SVG (no script, nothing fetched).

Bars and histogram patches are rasterized inside the SVG (one embedded PNG per chart),
so a chart's size does not grow with the attempts drawn; axes, ticks and labels stay
vector text. Figures are made with ``matplotlib.figure.Figure`` (no pyplot, no global
state, the Agg canvas), so nothing depends on a display.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from saturn_async.report.data import OUTCOMES, Attempt, Usage

COLORS = {
    "complete": "#2e9d4f",
    "failed": "#d62728",
    "timeout": "#ff9f1c",
    "terminated": "#7f7f7f",
    "not started": "#9467bd",
}
_DPI = 96
_XML_PROLOG = re.compile(r"^<\?xml[^>]*>\s*(<!DOCTYPE[^>]*>\s*)?", re.DOTALL)


def timeline(attempts: Sequence[Attempt]) -> str:
    """One row per slot, one bar per attempt, colored by outcome."""
    slots = sorted({a.slot for a in attempts})
    row = {slot: index for index, slot in enumerate(slots)}
    origin = min(a.start for a in attempts)
    height = min(9.0, 1.6 + 0.22 * len(slots))
    fig = Figure(figsize=(11, height), dpi=_DPI)
    ax = fig.add_subplot()
    for outcome in OUTCOMES:
        bars = [a for a in attempts if a.outcome == outcome]
        if not bars:
            continue
        ax.barh(
            [row[a.slot] for a in bars],
            [max(a.seconds, 1e-6) for a in bars],
            left=[a.start - origin for a in bars],
            height=0.8,
            color=COLORS[outcome],
            linewidth=0,
            rasterized=True,
        )
    ax.set_yticks(range(len(slots)), [str(s) for s in slots] if len(slots) <= 40 else None)
    if len(slots) > 40:
        ax.set_yticks([])
    ax.set_ylim(-0.6, len(slots) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first attempt started")
    ax.set_ylabel("slot")
    present = [o for o in OUTCOMES if any(a.outcome == o for a in attempts)]
    ax.legend(
        handles=[Patch(color=COLORS[o], label=o) for o in present],
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncol=len(present),
        fontsize="small",
        frameon=False,
    )
    return _svg(fig)


def durations(attempts: Sequence[Attempt]) -> str:
    """A histogram of attempt wall times, succeeded and not, stacked."""
    fig = Figure(figsize=(11, 3.2), dpi=_DPI)
    ax = fig.add_subplot()
    ok = [a.seconds for a in attempts if a.outcome == "complete"]
    other = [a.seconds for a in attempts if a.outcome != "complete"]
    series = [(ok, "succeeded", COLORS["complete"]), (other, "did not", COLORS["failed"])]
    present = [s for s in series if s[0]]
    ax.hist(
        [s[0] for s in present],
        bins=40,
        stacked=True,
        color=[s[2] for s in present],
        label=[s[1] for s in present],
        rasterized=True,
    )
    ax.set_xlabel("attempt wall time (s)")
    ax.set_ylabel("attempts")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize="small")
    return _svg(fig)


def usage(runs: Sequence[Usage]) -> str:
    """Histograms of the runs' peak memory and CPU time."""
    fig = Figure(figsize=(11, 3.2), dpi=_DPI)
    memory, cpu = fig.subplots(1, 2)
    memory.hist([u.max_rss_kib / 1024 for u in runs], bins=40, color="#1f77b4", rasterized=True)
    memory.set_xlabel("peak memory of a run (MiB, max RSS)")
    memory.set_ylabel("runs")
    cpu.hist([u.cpu_seconds for u in runs], bins=40, color="#8c564b", rasterized=True)
    cpu.set_xlabel("CPU time of a run (s, user + system)")
    for ax in (memory, cpu):
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _svg(fig)


def _svg(fig: Figure) -> str:
    fig.set_layout_engine("constrained")
    out = io.StringIO()
    fig.savefig(out, format="svg", metadata={"Date": None})
    return _XML_PROLOG.sub("", out.getvalue())
