"""Interrupting ``saturn batch``: nothing new starts, every run is stopped and recorded."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import CLI, pid_alive, wait_for
from saturn_async.storage.layout import decode_events


def start_batch(tmp_path: Path, job: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "batch", str(job), "-q", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def pids_started(tmp_path: Path, count: int) -> list[int]:
    files = [tmp_path / f"pid{i}" for i in range(count)]
    wait_for(lambda: all(f.exists() and f.read_text().strip() for f in files), what="runs to start")
    return [int(f.read_text()) for f in files]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_runs_and_grandchildren(
    tmp_path: Path, write_job, sig: int, code: int
) -> None:
    runs = [f"sleep 600 & echo $! > pid{i}; wait" for i in range(2)] + ["touch never"]
    proc = start_batch(tmp_path, write_job(runs, nprocs=2))
    grandchildren = pids_started(tmp_path, 2)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    for i, pid in enumerate(grandchildren):
        assert not pid_alive(pid)
        run = tmp_path / "out" / str(i)
        assert (run / "status_code").read_text() == "143\n"
        assert [e.type for e in decode_events((run / "events").read_bytes())][-1] == "terminated"
    assert not (tmp_path / "never").exists()
    assert not (tmp_path / "out" / "2").exists()


def test_kill_after_grace_for_runs_ignoring_term(tmp_path: Path, write_job) -> None:
    run = "trap '' TERM; echo $$ > pid0; while :; do sleep 0.05; done"
    proc = start_batch(tmp_path, write_job([run], nprocs=1), "--grace", "0.5")
    (pid,) = pids_started(tmp_path, 1)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert not pid_alive(pid)
    assert (tmp_path / "out" / "0" / "status_code").read_text() == "137\n"


def test_second_sigint_skips_the_grace(tmp_path: Path, write_job) -> None:
    run = "trap 'echo got > term' TERM; echo $$ > pid0; while :; do sleep 0.05; done"
    proc = start_batch(tmp_path, write_job([run], nprocs=1), "--grace", "3600")
    (pid,) = pids_started(tmp_path, 1)
    proc.send_signal(signal.SIGINT)
    wait_for((tmp_path / "term").exists, what="the run to get SIGTERM")
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert not pid_alive(pid)
    assert (tmp_path / "out" / "0" / "status_code").read_text() == "137\n"


def test_live_display_on_a_terminal(tmp_path: Path, write_job) -> None:
    job = write_job(["sleep 0.3"] * 4, nprocs=2)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, "batch", str(job)],
        cwd=tmp_path,
        stdout=follower,
        stderr=follower,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "120"},
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other side closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=30) == 0
    os.close(leader)
    screen = b"".join(chunks).decode(errors="replace")
    assert "runs/s" in screen and "ETA" in screen
    assert "slot" in screen and "elapsed" in screen
    assert "4 succeeded, 0 failed, 0 skipped, 0 not started" in screen
