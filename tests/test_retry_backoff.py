"""Waits between retries (``retry_delay``, ``retry_backoff``, ``retry_delay_max``) and
retrying only some exit statuses (``retry_on``): real runs under ``saturn batch``."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from conftest import CLI, wait_for
from daemons import Daemon
from saturn_async.storage.layout import epoch_of
from sweeps import events_of, write_sweep

Saturn = Callable[..., subprocess.CompletedProcess[str]]
WriteJob = Callable[..., Path]


def test_delays_grow_by_the_factor_within_the_jitter_and_stop_at_the_cap(
    saturn: Saturn, write_job: WriteJob, tmp_path: Path
) -> None:
    job = write_job(
        ["exit 7"],
        retries=5,
        retry_delay=0.1,
        retry_backoff=2,
        retry_delay_max=0.3,
    )
    result = saturn("batch", str(job), "-q")
    assert result.returncode == 1, result.stderr
    events = events_of(tmp_path / "out/0")
    retries = [e for e in events if e["type"] == "retry"]
    assert [e["attempt"] for e in retries] == [2, 3, 4, 5, 6]
    # Ceilings 0.1, 0.2, then the cap 0.3 (0.4, 0.8, 1.6 capped); each delay is drawn
    # between half the ceiling and all of it.
    for event, ceiling in zip(retries, [0.1, 0.2, 0.3, 0.3, 0.3], strict=True):
        assert ceiling / 2 <= event["delay_seconds"] <= ceiling, retries
    # Each retry started no sooner than its delay after the failed attempt ended.
    failed = [e for e in events if e["type"] == "failed"]
    started = [e for e in events if e["type"] == "started"]
    assert len(failed) == 6 and len(started) == 6
    for end, retry, start in zip(failed, retries, started[1:], strict=False):
        waited = epoch_of(start["utctimestamp"]) - epoch_of(end["utctimestamp"])
        assert waited >= retry["delay_seconds"] - 0.002
    assert (tmp_path / "out/0/status_code").read_text() == "7\n"


def test_retry_on_retries_only_those_exit_statuses(
    saturn: Saturn, write_job: WriteJob, tmp_path: Path
) -> None:
    job = write_job(
        ["exit 3", "exit 4", {"cmd": "exit 3", "retry_on": [3, 5]}],
        retries=2,
        retry_on=[4],
    )
    result = saturn("batch", str(job), "-q")
    assert result.returncode == 1, result.stderr
    attempts = [
        [e["attempt"] for e in events_of(tmp_path / f"out/{i}") if e["type"] == "failed"]
        for i in range(3)
    ]
    assert attempts == [[1], [1, 2, 3], [1, 2, 3]]
    retry = next(e for e in events_of(tmp_path / "out/1") if e["type"] == "retry")
    assert "delay_seconds" not in retry  # no retry_delay: no wait, as before


def test_sigterm_during_a_wait_before_a_retry_ends_the_batch_at_once(
    write_job: WriteJob, tmp_path: Path
) -> None:
    joblog = tmp_path / "joblog"
    job = write_job(["exit 1"], retries=3, retry_delay=300)
    proc = subprocess.Popen(
        [*CLI, "batch", str(job), "-q", "--joblog", str(joblog)], stderr=subprocess.PIPE
    )
    try:
        # The joblog has the first attempt's line once it ended: the wait has begun.
        wait_for(
            lambda: joblog.exists() and len(joblog.read_text().splitlines()) == 2,
            what="the first attempt's end",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143  # not 300 s later
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    events = events_of(tmp_path / "out/0")
    assert [e["type"] for e in events] == ["submitted", "started", "failed"]
    assert (tmp_path / "out/0/status_code").read_text() == "1\n"


def test_a_daemon_drain_ends_the_wait_before_a_retry(
    daemon: Daemon, saturn: Saturn, write_job: WriteJob, tmp_path: Path
) -> None:
    marker = tmp_path / "attempted"
    daemon.start("--nprocs", "1")
    job = write_job([f"touch {marker}; exit 1"], retries=3, retry_delay=300)
    result = saturn("submit", str(job), *daemon.address)
    assert result.returncode == 0, result.stderr
    wait_for(marker.exists, what="the first attempt")
    daemon.signal(signal.SIGTERM)  # a drain: running runs finish, no retry starts
    assert daemon.wait(timeout=30) == 0  # not 300 s later
    assert [e["type"] for e in events_of(tmp_path / "out/0")] == ["submitted", "started", "failed"]
    assert (tmp_path / "out/0/status_code").read_text() == "1\n"


def test_a_sweep_files_retry_fields_hold_for_every_task(saturn: Saturn, tmp_path: Path) -> None:
    tasks = [{"name": "flaky", "command": "exit 7"}, {"name": "other", "command": "exit 8"}]
    path = write_sweep(tmp_path, tasks, retries=2, retry_delay=0.1, retry_on=[7])
    result = saturn("run", str(path), "-q")
    assert result.returncode == 1, result.stderr
    flaky = [e for e in events_of(tmp_path / "results/flaky") if e["type"] == "retry"]
    assert [e["attempt"] for e in flaky] == [2, 3]
    assert all(0.05 <= e["delay_seconds"] <= 0.1 for e in flaky)
    assert not [e for e in events_of(tmp_path / "results/other") if e["type"] == "retry"]
