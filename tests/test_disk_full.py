"""A run that fills the disk: the batch neither hangs nor leaves half-written records."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def tiny_fs(mount_tmpfs: Callable[[str], Path]) -> Path:
    return mount_tmpfs("256k")


def test_disk_full(tiny_fs: Path, write_job, saturn) -> None:
    job = write_job(["head -c 10000000 /dev/zero", "echo small"], output=str(tiny_fs / "out"))
    result = saturn("batch", str(job), "-q")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "could not record the outcome of" in result.stderr
    assert "No space left on device" in result.stderr
    leftovers = [p for p in tiny_fs.rglob("*") if ".tmp-" in p.name]
    assert leftovers == [], "temporary files of failed atomic writes are removed"
    for run in (tiny_fs / "out").iterdir():
        status = run / "status_code"
        assert not status.exists() or status.read_text().strip().isdigit()
