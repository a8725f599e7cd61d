"""``saturn report``: one self-contained HTML page, checked in a real headless Chromium."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import anyio
import pytest
from PIL import Image

from conftest import saturn_without
from saturn_async.report.charts import COLORS, rgb_of
from saturn_async.report.data import MAX_BARS, Attempt, ReportData, Usage
from saturn_async.report.html import MARKER, render
from saturn_async.storage.s3 import S3Storage
from sweeps import write_sweep

RUNS = [
    "echo fine",
    {"cmd": "echo 'quota exceeded on /data' >&2; exit 3", "retries": 1},
    "echo 'no such file: input.csv' >&2; exit 3",
    "python3 -c 'x = bytearray(64 << 20)'",
    {"cmd": "sleep 5", "timeout": 0.2},
    "sleep 0.3",
    "exit 7",
]


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with its console on stderr; no network beyond this machine."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail(
            "chromium is missing: scripts/test installs it (as root: apt-get install chromium)"
        )
    return subprocess.run(
        [
            browser,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def console_problems(stderr: str) -> list[str]:
    """Console messages (errors, warnings, logs) and failed loads Chromium reported."""
    return [
        line
        for line in stderr.splitlines()
        if "CONSOLE" in line or "Failed to load resource" in line or "Uncaught" in line
    ]


@pytest.fixture
def report_page(tmp_path, write_job, saturn) -> Path:
    job = write_job(RUNS, nprocs=3)
    assert saturn("batch", "-q", str(job)).returncode == 1
    done = saturn("report", str(tmp_path / "out"), "-o", "report.html")
    assert done.returncode == 0, done.stderr
    return tmp_path / "report.html"


def test_report_renders_its_charts_in_chromium(tmp_path, report_page) -> None:
    page = report_page.read_text()
    # Self-contained: every src/href is inline data or a fragment; no script at all.
    links = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert links and all(link.startswith(("data:", "#")) for link in links), links
    assert "<script" not in page and "@import" not in page and "url(" not in page
    assert "exit code 3: 2 runs" in page and "quota exceeded on /data" in page
    assert "exit code 7: 1 run" in page

    dom = chromium("--dump-dom", report_page.as_uri(), profile=tmp_path / "p1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not console_problems(dom.stderr)
    for chart in ("timeline", "durations", "usage"):
        section = re.search(rf'<div class="chart" id="{chart}">\s*<svg.*?</svg>', dom.stdout, re.S)
        assert section, chart
        assert "<image" in section.group(0) and "<text" in section.group(0)  # bars, labels
    counts = re.search(r'id="count-runs"><b>(\d+)</b>', dom.stdout)
    assert counts and counts.group(1) == str(len(RUNS))

    shot = tmp_path / "shot.png"
    drawn = chromium(
        f"--screenshot={shot}",
        "--window-size=1200,2600",
        "--hide-scrollbars",
        report_page.as_uri(),
        profile=tmp_path / "p2",
    )
    assert drawn.returncode == 0 and shot.exists(), drawn.stderr[-2000:]
    assert not console_problems(drawn.stderr)
    image = Image.open(shot).convert("RGB")
    colors = image.getcolors(maxcolors=1 << 20) or []
    assert len(colors) > 50  # text, charts, antialiasing: not a blank page
    white = sum(n for n, rgb in colors if rgb == (255, 255, 255))
    assert white < 0.97 * image.width * image.height
    seen = {rgb: n for n, rgb in colors}
    for outcome in ("complete", "failed", "timeout"):  # bars in each outcome's color
        assert seen.get(rgb_of(COLORS[outcome]), 0) > 1000, outcome  # more than a legend key


def test_console_problems_are_seen(tmp_path) -> None:
    """The check above would see a console error or a load from the network."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<html><body><img src="http://example.invalid/x.png">'
        "<script>console.error('broken chart')</script></body></html>"
    )
    done = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "p")
    assert any("broken chart" in line for line in console_problems(done.stderr)), done.stderr


def test_a_big_timeline_is_aggregated_and_says_so() -> None:
    """Past MAX_BARS attempts every attempt still counts: a slot that only failed is red."""
    count = 4 * MAX_BARS
    data = ReportData("synthetic", total=count, succeeded=count - count // 8, failed=count // 8)
    data.attempts = [
        Attempt(i % 8, 1_700_000_000 + (i // 8) * 1.0, 0.9, "failed" if i % 8 == 0 else "complete")
        for i in range(count)
    ]
    data.usage = [Usage(1024 * (i % 500), i % 13, f"/o/{i}", "x") for i in range(count)]
    page = render(data)
    assert f"All {count:,} attempts, aggregated" in page
    assert len(page) < 1 << 20
    timeline = re.search(r'id="timeline">.*?</svg>', page, re.S)
    assert timeline
    encoded = re.search(r'href="data:image/png;base64,([^"]+)"', timeline.group(0))
    assert encoded
    cells = Image.open(io.BytesIO(base64.b64decode(encoded.group(1)))).convert("RGB")
    seen = {rgb for _, rgb in cells.getcolors(maxcolors=1 << 20) or []}
    assert {rgb_of(COLORS["failed"]), rgb_of(COLORS["complete"])} <= seen


def test_report_refuses_a_file_it_did_not_write(tmp_path, report_page, saturn) -> None:
    first = report_page.read_text()
    assert first.startswith(f"<!DOCTYPE html>\n{MARKER}\n")
    again = saturn("report", str(tmp_path / "out"), "-o", "report.html")
    assert again.returncode == 0, again.stderr  # its own report is replaced
    notes = tmp_path / "notes.html"
    notes.write_text("<html>mine</html>")
    for target in (notes, tmp_path / "out" / "0" / "r.html", tmp_path / "nodir" / "r.html"):
        done = saturn("report", str(tmp_path / "out"), "-o", str(target))
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert notes.read_text() == "<html>mine</html>"
    assert not (tmp_path / "out" / "0" / "r.html").exists()


def test_report_without_matplotlib_names_the_extra(tmp_path) -> None:
    done = saturn_without("matplotlib", "report", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().endswith("pip install 'saturn_async[report]'"), done.stderr
    assert done.stderr.count("\n") == 1


def test_report_of_a_sweep_written_to_s3(tmp_path, saturn, s3) -> None:
    path = write_sweep(tmp_path)
    assert saturn("run", str(path), "-q").returncode == 1
    done = saturn("report", "--name", "lr-sweep", "-o", f"{s3}/reports/lr.html")
    assert done.returncode == 0, done.stderr

    async def fetch() -> bytes | None:
        async with S3Storage() as storage:
            return await storage.get(f"{s3}/reports/lr.html")

    page = (anyio.run(fetch) or b"").decode()
    assert page.startswith(f"<!DOCTYPE html>\n{MARKER}\n")
    assert "exit code 3: 1 run" in page and "diverged" in page
