"""Hostile cases of "nothing hangs": FIFOs a run leaves where saturn reads or removes,
and values that would break a wait (docs/security.md, "Nothing hangs").

Each command runs with a timeout: before the fixes these waited forever.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hostile import changes_outside, snapshot

R = "$SATURN_RUN_LOCAL_RESULTS_DIR"


def write_batch(tmp_path: Path, root: str, runs: list[dict[str, Any]]) -> Path:
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"nprocs": 1, "remote_output_path": root, "runs": runs}))
    return path


def test_a_results_directory_turned_into_a_fifo_does_not_hang_the_upload(
    s3: str, tmp_path: Path, saturn: Any
) -> None:
    from test_s3_outputs import objects

    root = f"{s3}/fifo-results"
    job = write_batch(
        tmp_path,
        root,
        [{"cmd": f"cd {R}/.. && rm -rf results && mkfifo results"}, {"cmd": "echo next"}],
    )
    result = saturn("batch", "-q", "--staging-dir", str(tmp_path / "staging"), str(job))
    assert "Traceback" not in result.stderr
    stored = objects(root)
    assert "0/status_code" in stored, (result.returncode, result.stderr)
    assert stored["1/status_code"] == b"0\n" and stored["1/stdout/000000"] == b"next\n"


@pytest.mark.parametrize("command", ["logs", "status"])
def test_reading_outputs_a_run_replaced_by_fifos_does_not_hang(
    command: str, tmp_path: Path, saturn: Any
) -> None:
    job = write_batch(
        tmp_path,
        str(tmp_path / "out"),
        [
            {"cmd": "exit 3"},
            {
                "cmd": "cd $SATURN_RUN_REMOTE_OUTPUT_PATH && rm stdout && mkfifo stdout && "
                "mkdir ../junk && echo 1 > ../junk/status_code && mkfifo ../junk/events"
            },
        ],
    )
    assert saturn("batch", "-q", str(job)).returncode == 1
    before = snapshot(tmp_path)
    if command == "logs":
        result = saturn("logs", "out/1", timeout=30)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "out/1/stdout" in result.stderr
        assert "regular files" in result.stderr
    else:
        result = saturn("status", "out", timeout=30)
        assert result.returncode in (0, 1), result.stderr
        assert "Traceback" not in result.stderr
    assert changes_outside(before, snapshot(tmp_path), []) == []


@pytest.mark.parametrize("flag", ["--grace", "--log-chunk-minutes"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_seconds_that_are_not_finite_are_refused_before_anything_starts(
    flag: str, value: str, tmp_path: Path, saturn: Any
) -> None:
    job = write_batch(tmp_path, str(tmp_path / "out"), [{"cmd": "trap '' TERM; sleep 30"}])
    result = saturn("batch", "-q", flag, value, str(job), timeout=30)
    assert result.returncode == 2, result.stderr
    assert "is not a finite number" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
