"""Load-aware starts: ``--memfree`` and ``--load`` hold runs back before they start
(``saturn batch`` and the daemon); the decision and its cached reading on their own."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from conftest import CLI, wait_for
from daemons import Daemon
from saturn_async.supervisor.load_admission import LoadAdmission, Reading, refusal

Saturn = Callable[..., subprocess.CompletedProcess[str]]
# More memory than any machine has available.
_TOO_MUCH = "1024T"
_WAITING = "starting no runs while MemAvailable"


def test_refusal_names_what_holds_starts_back() -> None:
    reading = Reading(mem_available=2 << 30, load=3.5)
    assert refusal(reading, None, None) is None
    assert refusal(reading, 2 << 30, 3.6) is None
    assert refusal(reading, 3 << 30, None) == "MemAvailable 2.0G is under --memfree 3.0G"
    assert refusal(reading, None, 3.5) == "the 1-minute load 3.50 is not under --load 3.5"
    assert refusal(Reading(mem_available=None, load=0.0), 1, None) is None


def test_a_reading_serves_half_a_second_of_starts() -> None:
    now = [100.0]
    reads: list[float] = []

    def read() -> Reading:
        reads.append(now[0])
        return Reading(mem_available=1 << 30, load=0.5 if len(reads) < 3 else 9.0)

    admission = LoadAdmission(None, 2.0, print, read=read, clock=lambda: now[0])
    for step in (0.0, 0.1, 0.4):  # one reading for all of them
        now[0] = 100.0 + step
        assert admission.refused() is None
    assert reads == [100.0]
    now[0] = 100.5
    assert admission.refused() is None
    now[0] = 101.0
    assert admission.refused() == "the 1-minute load 9.00 is not under --load 2"
    assert reads == [100.0, 100.5, 101.0]


def test_a_waiting_start_says_why_once_and_gives_up_at_a_stop() -> None:
    lines: list[str] = []
    stopped = [False]

    async def main() -> list[bool]:
        reported = anyio.Event()

        def report(line: str) -> None:
            lines.append(line)
            reported.set()

        admission = LoadAdmission(4 << 30, None, report, read=lambda: Reading(1 << 30, 0.0))
        results: list[bool] = []

        async def wait() -> None:
            results.append(await admission.wait(lambda: stopped[0]))

        async with anyio.create_task_group() as tg:
            for _ in range(3):  # three slots wait at once
                tg.start_soon(wait)
            await reported.wait()
            stopped[0] = True
        return results

    assert anyio.run(main) == [False, False, False]
    assert lines == ["starting no runs while MemAvailable 1.0G is under --memfree 4.0G; waiting"]


def test_batch_starts_nothing_below_memfree(tmp_path: Path, write_job: Callable[..., Path]) -> None:
    job = write_job([f"touch {tmp_path}/ran-{i}" for i in range(6)], nprocs=3)
    log = tmp_path / "stderr"
    with log.open("w") as stderr:
        proc = subprocess.Popen([*CLI, "batch", "--memfree", _TOO_MUCH, str(job)], stderr=stderr)
    try:
        wait_for(lambda: _WAITING in log.read_text(), what="the line saying why")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert log.read_text().count("starting no runs") == 1, log.read_text()
    assert not list(tmp_path.glob("ran-*"))
    assert not list((tmp_path / "out").glob("*/status_code"))


def test_batch_starts_runs_under_the_load(
    tmp_path: Path, saturn: Saturn, write_job: Callable[..., Path]
) -> None:
    job = write_job([f"touch {tmp_path}/ran-{i}" for i in range(4)])
    result = saturn("batch", "-q", "--load", "100000", "--memfree", "1K", str(job))
    assert result.returncode == 0, result.stderr
    assert len(list(tmp_path.glob("ran-*"))) == 4
    assert "starting no runs" not in result.stderr


def test_the_daemon_starts_nothing_below_memfree(
    daemon: Daemon, tmp_path: Path, saturn: Saturn, write_job: Callable[..., Path]
) -> None:
    daemon.start("--nprocs", "2", "--memfree", _TOO_MUCH)
    job = write_job([f"touch {tmp_path}/ran-{i}" for i in range(4)])
    assert saturn("submit", str(job), *daemon.address).returncode == 0
    wait_for(lambda: _WAITING in daemon.log(), what="the daemon's line saying why")
    snapshot = daemon.ps()
    assert snapshot.running == [] and snapshot.batches[0].succeeded == 0
    daemon.signal(signal.SIGTERM)  # drain: the waiting runs stay queued
    assert daemon.wait() == 0
    assert daemon.log().count("starting no runs") == 1, daemon.log()
    assert not list(tmp_path.glob("ran-*"))


@pytest.mark.parametrize("command", ["batch", "daemon"])
def test_a_bad_size_is_one_line(
    command: str, tmp_path: Path, saturn: Saturn, write_job: Callable[..., Path]
) -> None:
    job = write_job([f"touch {tmp_path}/ran"])
    args = [str(job)] if command == "batch" else ["--state-dir", str(tmp_path / "state")]
    result = saturn(command, "--memfree", "10Q", *args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "saturn: error: --memfree: '10Q' is not a size (a positive number of bytes, or with "
        "K, M, G or T)"
    ]
    assert not (tmp_path / "ran").exists() and not (tmp_path / "state").exists()


def test_a_bad_daemon_setting_names_its_file(tmp_path: Path, saturn: Saturn) -> None:
    config = tmp_path / "daemon.yaml"
    config.write_text("memfree: 10Q\ngpus: 'x'\n")
    state = tmp_path / "state"
    result = saturn("daemon", "--config", str(config), "--state-dir", str(state))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"{config}: $.gpus: 'x' is not a GPU" in result.stderr
    assert not state.exists()


def test_a_bad_load_is_refused(
    tmp_path: Path, saturn: Saturn, write_job: Callable[..., Path]
) -> None:
    job = write_job([f"touch {tmp_path}/ran"])
    result = saturn("batch", "--load", "0", str(job))
    assert result.returncode == 2
    assert "Invalid value for '--load'" in result.stderr
    assert not (tmp_path / "ran").exists()
