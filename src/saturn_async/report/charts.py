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

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from saturn_async.report.data import MAX_BARS, OUTCOMES, Attempt, Usage

COLORS = {
    "complete": "#2e9d4f",
    "failed": "#d62728",
    "timeout": "#ff9f1c",
    "terminated": "#7f7f7f",
    "not started": "#9467bd",
}
COLUMNS = 1000
"""Cells per slot of the aggregated timeline."""
_DPI = 96
_XML_PROLOG = re.compile(r"^<\?xml[^>]*>\s*(<!DOCTYPE[^>]*>\s*)?", re.DOTALL)


def timeline(attempts: Sequence[Attempt]) -> str:
    """One row per slot, one bar per attempt colored by outcome; past MAX_BARS attempts,
    the same rows as COLUMNS cells each, their colors mixed from the attempts in them
    (:func:`_cells`)."""
    slots = sorted({a.slot for a in attempts})
    row = {slot: index for index, slot in enumerate(slots)}
    origin = min(a.start for a in attempts)
    fig = Figure(figsize=(11, min(9.0, 1.6 + 0.22 * len(slots))), dpi=_DPI)
    ax = fig.add_subplot()
    if len(attempts) <= MAX_BARS:
        for outcome in OUTCOMES:
            bars = [a for a in attempts if a.outcome == outcome]
            if bars:
                ax.barh(
                    [row[a.slot] for a in bars],
                    [max(a.seconds, 1e-6) for a in bars],
                    left=[a.start - origin for a in bars],
                    height=0.8,
                    color=COLORS[outcome],
                    linewidth=0,
                    rasterized=True,
                )
    else:
        image, span = _cells(attempts, row, origin)
        ax.imshow(
            image,
            aspect="auto",
            interpolation="nearest",
            extent=(0, span, len(slots) - 0.5, -0.5),
        )
    ax.set_yticks(range(len(slots)), [str(s) for s in slots])
    if len(slots) > 40:
        ax.set_yticks([])
    ax.set_ylim(len(slots) - 0.5, -0.5)
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


def _cells(
    attempts: Sequence[Attempt], row: dict[int, int], origin: float
) -> tuple[npt.NDArray[np.uint8], float]:
    """An RGB image of ``len(row)`` x COLUMNS cells, and the seconds it spans.

    For each outcome, the attempts overlapping each cell are counted (a +1/-1 at each
    attempt's first and past-last cell, then a running sum along the row); a cell's
    color mixes the outcomes' colors in proportion to those counts (all failed: red; one
    in ten: a green a tenth of the way to red), or stays white when no attempt overlaps
    it. Linear in the attempts; none is left out.
    """
    rows = np.fromiter((row[a.slot] for a in attempts), dtype=np.intp, count=len(attempts))
    starts = np.fromiter((a.start - origin for a in attempts), dtype=float, count=len(attempts))
    ends = starts + np.fromiter((a.seconds for a in attempts), dtype=float, count=len(attempts))
    span = max(float(ends.max()), 1e-9)
    first = np.minimum((starts / span * COLUMNS).astype(np.intp), COLUMNS - 1)
    last = np.minimum((ends / span * COLUMNS).astype(np.intp), COLUMNS - 1)
    outcome = np.fromiter(
        (OUTCOMES.index(a.outcome) for a in attempts), dtype=np.intp, count=len(attempts)
    )
    counts = np.zeros((len(OUTCOMES), len(row), COLUMNS + 1), dtype=np.float64)
    np.add.at(counts, (outcome, rows, first), 1)
    np.add.at(counts, (outcome, rows, last + 1), -1)
    counts = counts.cumsum(axis=2)[:, :, :COLUMNS]
    total = counts.sum(axis=0)
    palette = np.array([rgb_of(COLORS[o]) for o in OUTCOMES], dtype=np.float64)
    mixed = np.einsum("krc,kx->rcx", counts, palette) / np.maximum(total, 1)[:, :, None]
    mixed[total == 0] = 255
    return mixed.round().astype(np.uint8), span


def rgb_of(color: str) -> tuple[int, int, int]:
    """``#rrggbb`` as (r, g, b)."""
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


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
