"""The report page: one self-contained HTML file (inline CSS and SVG, no script, nothing
fetched), so it opens offline and can be stored beside the outputs."""

from __future__ import annotations

import html
from datetime import UTC, datetime

import matplotlib

from saturn_async import __version__
from saturn_async.report import charts
from saturn_async.report.charts import COLUMNS
from saturn_async.report.data import MAX_BARS, TAIL_LINES, ReportData

MARKER = "<!-- saturn_async report -->"
"""The page's second line: ``-o`` replaces only a file that has it (a report saturn wrote)."""

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;
max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.6em;
border-bottom:1px solid #ddd}.meta{color:#666;font-size:.9em}
.counts{display:flex;gap:1em;flex-wrap:wrap;margin:1em 0}
.count{border:1px solid #ddd;border-radius:6px;padding:.5em 1em;min-width:7em}
.count b{display:block;font-size:1.6em}.ok b{color:#2e9d4f}.bad b{color:#d62728}
.note{color:#666;font-size:.9em}svg{max-width:100%;height:auto}
table{border-collapse:collapse;width:100%;font-size:.9em}
td,th{border-bottom:1px solid #eee;padding:.3em .5em;text-align:left;vertical-align:top}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em}
pre{background:#f6f6f6;padding:.4em;margin:.2em 0;white-space:pre-wrap;
word-break:break-all;max-height:12em;overflow:auto}
"""


def render(data: ReportData) -> str:
    """The whole page."""
    with matplotlib.rc_context({"svg.fonttype": "none", "savefig.dpi": 100}):
        sections = [_counts(data), *_charts(data), _failures(data), _memory(data)]
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = html.escape(data.title)
    return (
        f'<!DOCTYPE html>\n{MARKER}\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>saturn report: {title}</title><style>{_STYLE}</style></head><body>"
        f"<h1>saturn report</h1><div class=meta>{title} &middot; written {now} by "
        f"saturn_async {__version__}</div>{''.join(sections)}</body></html>\n"
    )


def _counts(data: ReportData) -> str:
    boxes = [
        ("runs", data.total, ""),
        ("succeeded", data.succeeded, "ok"),
        ("failed", data.failed, "bad" if data.failed else ""),
        ("not finished", data.not_finished, ""),
        ("attempts", data.attempt_count, ""),
    ]
    inner = "".join(
        f'<div class="count {css}" id="count-{name.replace(" ", "-")}"><b>{value:,}</b>{name}</div>'
        for name, value, css in boxes
    )
    return f'<div class="counts">{inner}</div>'


def _charts(data: ReportData) -> list[str]:
    if not data.attempts:
        return ["<p class=note>No attempt has ended yet: nothing to draw.</p>"]
    if data.attempt_count > MAX_BARS:
        note = (
            f"All {data.attempt_count:,} attempts, aggregated (past {MAX_BARS:,} they are "
            f"not drawn one by one): each slot's row is {COLUMNS:,} cells, and a cell mixes "
            "the outcomes' colors in proportion to the attempts overlapping it (one in ten "
            "failed: a green a tenth of the way to red)."
        )
    else:
        note = f"All {data.attempt_count:,} attempts, one bar each."
    return [
        f"<h2>Timeline of slots</h2><p class=note>{note} One row per slot "
        "(<code>SATURN_RUN_LOCAL_RANK</code>; batches on several machines share the "
        "rows), colored by outcome.</p>"
        f'<div class=chart id="timeline">{charts.timeline(data.attempts)}</div>',
        '<h2>Durations</h2><div class=chart id="durations">'
        f"{charts.durations(data.attempts)}</div>",
    ]


def _failures(data: ReportData) -> str:
    if not data.failures:
        return "<h2>Failures</h2><p class=note>None.</p>"
    parts = ["<h2>Failures by exit code</h2>"]
    for code, group in sorted(data.failures.items(), key=lambda item: -item[1].count):
        more = group.count - len(group.shown)
        extra = f" ({len(group.shown)} shown)" if more else ""
        rows = "".join(
            f"<tr><td><code>{html.escape(run.cmd)}</code><br><span class=note>"
            f"{html.escape(run.location)}</span></td><td><pre>"
            f"{html.escape(run.stderr_tail) or '(empty)'}</pre></td></tr>"
            for run in group.shown
        )
        parts.append(
            f'<h3 id="exit-{code}">exit code {code}: {_runs(group.count)}{extra}</h3>'
            f"<table><tr><th>command and output path</th><th>last {TAIL_LINES} lines of "
            f"stderr (<code>log</code> in the sweep layout)</th></tr>{rows}</table>"
        )
    return "".join(parts)


def _memory(data: ReportData) -> str:
    if not data.usage:
        return "<h2>Memory and CPU</h2><p class=note>No run recorded its usage.</p>"
    rows = "".join(
        f"<tr><td>{u.max_rss_kib / 1024:,.1f}</td><td>{u.cpu_seconds:,.2f}</td>"
        f"<td><code>{html.escape(u.cmd)}</code><br><span class=note>"
        f"{html.escape(u.location)}</span></td></tr>"
        for u in data.top_memory()
    )
    return (
        f"<h2>Memory and CPU per run</h2><p class=note>{_runs(len(data.usage))} recorded "
        "their peak memory (the largest max RSS wait4 reported for an attempt) and CPU "
        "time (user + system, all attempts).</p>"
        f'<div class=chart id="usage">{charts.usage(data.usage)}</div>'
        "<h3>The runs with the highest peak memory</h3><table><tr><th>peak MiB</th>"
        f"<th>CPU s</th><th>command and output path</th></tr>{rows}</table>"
    )


def _runs(count: int) -> str:
    return f"{count:,} run" if count == 1 else f"{count:,} runs"
