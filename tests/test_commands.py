"""Command lists (``saturn batch --commands``) and the original client's command names."""

from __future__ import annotations

import json
from pathlib import Path


def test_summarize_batch_is_status(tmp_path: Path, write_job, saturn) -> None:
    job = write_job(["true", "exit 3"], nprocs=1)
    assert saturn("batch", str(job), "-q").returncode == 1
    result = saturn("summarize-batch", str(job), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(saturn("status", str(job), "--json").stdout)
    assert "1 succeeded, 1 failed" in saturn("summarize-batch", str(job)).stdout


def test_batch_without_output_root_names_no_foreign_flag(tmp_path: Path, saturn) -> None:
    (tmp_path / "job.json").write_text('{"nprocs": 1, "runs": [{"cmd": "true"}]}')
    result = saturn("batch", "job.json")
    assert result.returncode == 2
    assert result.stderr == (
        "saturn: error: job.json: $.remote_output_path: required field is missing\n"
    )
    (tmp_path / "r.yaml").write_text("spec: {}\n")
    result = saturn("split", "r.yaml", "job.json", "c")
    assert result.returncode == 2
    assert "(or pass --remote-output-path)" in result.stderr
