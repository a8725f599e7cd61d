"""A run that fills the disk: the batch neither hangs nor leaves half-written records."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mountpoint)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:  # needs root (CAP_SYS_ADMIN): nothing to install
        pytest.skip(f"cannot mount a small tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


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
