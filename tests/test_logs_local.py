"""``saturn logs`` on local outputs: the plain files, and --follow until the status."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import CLI, wait_for


def test_logs_prints_a_local_run_binary_safe(tmp_path: Path, write_job, saturn) -> None:
    job = write_job(["printf 'a\\377b\\n'; echo oops >&2"], nprocs=1)
    assert saturn("batch", str(job), "-q").returncode == 0
    out = subprocess.run([*CLI, "logs", "out/0"], cwd=tmp_path, capture_output=True, check=True)
    assert out.stdout == b"a\xffb\n"
    err = saturn("logs", "out/0", "--stream", "stderr")
    assert err.stdout == "oops\n"


def test_logs_follow_waits_for_the_status(tmp_path: Path, write_job) -> None:
    flag = tmp_path / "flag"
    job = write_job([f"echo one; while [ ! -e {flag} ]; do sleep 0.05; done; echo two"], nprocs=1)
    batch = subprocess.Popen([*CLI, "batch", str(job), "-q"], cwd=tmp_path)
    try:
        wait_for((tmp_path / "out" / "0" / "stdout").exists, what="the run's stdout")
        follower = subprocess.Popen(
            [*CLI, "logs", "out/0", "-f"], cwd=tmp_path, stdout=subprocess.PIPE
        )
        assert follower.stdout is not None
        assert follower.stdout.readline() == b"one\n"
        assert follower.poll() is None
        flag.touch()
        out, _ = follower.communicate(timeout=30)
        assert out == b"two\n"
        assert follower.returncode == 0
        assert batch.wait(timeout=30) == 0
    finally:
        batch.kill()
        batch.wait()


def test_logs_of_a_path_holding_nothing_is_an_error(tmp_path: Path, saturn) -> None:
    done = saturn("logs", str(tmp_path / "typo"))
    assert done.returncode == 2
    assert done.stderr == f"saturn: error: PATH_OR_URL: no run output at {tmp_path / 'typo'}\n"


def test_logs_of_a_directory_holding_no_run_is_an_error(tmp_path: Path, write_job, saturn) -> None:
    assert saturn("batch", str(write_job(["echo hi"])), "-q").returncode == 0
    (tmp_path / "empty").mkdir()
    for directory in ("out", "empty"):  # the batch's root holds runs, but is none
        done = saturn("logs", directory)
        # Before: nothing printed, exit 0.
        assert done.returncode == 2
        assert (
            done.stderr == f"saturn: error: PATH_OR_URL: no run output at {tmp_path / directory}\n"
        )


def test_logs_stderr_of_a_run_with_one_log_says_so(tmp_path: Path, write_job, saturn) -> None:
    job = write_job(["echo out; echo err >&2"], layout="sweep")
    assert saturn("batch", str(job), "-q").returncode == 0
    for stream in ("stderr", "stdout"):
        done = saturn("logs", "out/0", "--stream", stream)
        assert done.returncode == 2
        assert f"this run has no {stream}: its stdout and stderr are one log" in done.stderr
        assert "--stream log" in done.stderr
    assert saturn("logs", "out/0", "--stream", "log").stdout == "out\nerr\n"
