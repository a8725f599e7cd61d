"""``saturn status``: counts and failed runs from a batch file or an output directory."""

from __future__ import annotations

import json
import os
from pathlib import Path


def test_status_of_directory_and_batch_file(tmp_path: Path, write_job, saturn) -> None:
    job = write_job(["true", "exit 7", "true"], nprocs=1)
    assert saturn("batch", str(job), "-q").returncode == 1
    (tmp_path / "out" / "2" / "status_code").unlink()  # as if it had been interrupted
    (tmp_path / "out" / "2" / "results").mkdir()

    by_dir = json.loads(saturn("status", "out", "--json").stdout)
    by_file = json.loads(saturn("status", str(job), "--json").stdout)
    for report in (by_dir, by_file):
        assert (report["succeeded"], report["failed"], report["not_finished"]) == (1, 1, 1)
        assert report["failed_runs"] == [
            {"path": str(tmp_path / "out" / "1"), "status_code": 7, "cmd": "exit 7"}
        ]
        assert report["not_finished_runs"] == [str(tmp_path / "out" / "2")]

    text = saturn("status", "out").stdout
    assert "1 succeeded, 1 failed, 1 not finished, of 3 runs" in text
    assert "exit 7" in text and str(tmp_path / "out" / "1") in text


def test_status_counts_runs_never_started(tmp_path: Path, write_job, saturn) -> None:
    job = write_job(["true", "true"])
    report = json.loads(saturn("status", str(job), "--json").stdout)
    assert report["total"] == 2 and report["not_finished"] == 2


def test_status_of_missing_path(saturn) -> None:
    result = saturn("status", "nowhere")
    assert result.returncode == 2
    assert result.stderr.strip() == "saturn: error: nowhere: cannot read: No such file or directory"


def test_status_keeps_long_paths_whole_at_80_columns(tmp_path: Path, write_job, saturn) -> None:
    output = tmp_path / ("a-rather-long-directory-name-" * 3) / "out"
    job = write_job(["exit 3", "echo one\necho two; exit 4"], nprocs=1, output=str(output))
    assert saturn("batch", str(job), "-q").returncode == 1
    for env in ({"COLUMNS": "80"}, {"COLUMNS": "40"}):
        text = saturn("status", str(job), env={**os.environ, **env}).stdout
        # Before: a table that folded the paths (and commands) mid-token.
        assert text.splitlines()[1:] == [
            "failed runs (exit code, path, command):",
            f"  3  {output}/0  exit 3",
            f"  4  {output}/1  echo one\\necho two; exit 4",
        ]
