"""``saturn batch --requeue-on-term``: a TERM is the job system taking the batch back to
run it again (Slurm's requeue, preemption). The runs it stops record nothing and give
their lease back, so the batch run again with ``--skip-finished`` reruns exactly them;
INT still records what it stops."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import anyio
import pytest

from conftest import CLI, pid_alive, wait_for
from saturn_async.storage import storage_for
from saturn_async.storage.layout import decode_events

SUBMITTED = "2026-12-02T10:00:00.000000Z"


def _batch(tmp_path: Path, job: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "batch", str(job), f"--submitted={SUBMITTED}", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _runs(tmp_path: Path) -> list[str]:
    """Two that finish, then two that wait for ``gate`` (a count of starts in ``starts``)."""
    start = f"echo $SATURN_RUN_LOCAL_RANK >> {tmp_path}/starts"
    held = f"{start}; echo $$ > {tmp_path}/pid$SATURN_RUN_LOCAL_RANK; "
    held += f"while [ ! -e {tmp_path}/gate ]; do sleep 0.05; done"
    return [f"{start}; true", f"{start}; true", held, held]


def _stored(output: str, paths: list[str]) -> list[bytes | None]:
    async def main() -> list[bytes | None]:
        async with storage_for(output) as storage:
            return [await storage.get(f"{output}/{path}") for path in paths]

    return anyio.run(main)


def _starts(tmp_path: Path) -> int:
    path = tmp_path / "starts"
    return len(path.read_text().split()) if path.exists() else 0


@pytest.fixture(params=["local", "s3"])
def output(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "s3":
        return f"{request.getfixturevalue('s3')}/requeue"
    return str(tmp_path / "out")


def _held_pids(tmp_path: Path) -> list[int]:
    files = [tmp_path / f"pid{rank}" for rank in range(2)]
    wait_for(lambda: all(f.exists() and f.read_text().strip() for f in files), what="2 held")
    return [int(f.read_text()) for f in files]


def test_term_leaves_the_stopped_runs_to_the_requeue(tmp_path, write_job, output) -> None:
    job = write_job(_runs(tmp_path), nprocs=2, output=output)
    first = _batch(tmp_path, job, "-q", "--requeue-on-term")
    wait_for(lambda: _starts(tmp_path) == 4, what="the held runs to start")
    held = _held_pids(tmp_path)
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert not any(pid_alive(pid) for pid in held)
    statuses = _stored(output, [f"{i}/status_code" for i in range(4)])
    assert [s is not None for s in statuses] == [True, True, False, False]
    (tmp_path / "gate").touch()
    # Run again as Slurm's requeued array task does: the two left run, once each.
    again = _batch(tmp_path, job, "-q", "--requeue-on-term", "--skip-finished")
    _, stderr = again.communicate(timeout=60)
    assert again.returncode == 0, stderr
    assert _starts(tmp_path) == 6
    assert _stored(output, [f"{i}/status_code" for i in range(4)]) == [b"0\n"] * 4
    events = _stored(output, ["2/events"])[0]
    assert events is not None
    assert [e.type for e in decode_events(events)] == ["submitted", "started", "complete"]


@pytest.mark.parametrize("reaction", ["dies of it", "exits 1"])
def test_a_run_ended_by_the_job_systems_term_first_is_left_too(
    tmp_path, write_job, reaction
) -> None:
    # A preemption TERMs every process of the job: the run may end, and be reaped,
    # before saturn batch handles its own TERM, with whatever code it exits with.
    trap = "trap 'exit 1' TERM; " if reaction == "exits 1" else ""
    job = write_job([trap + _runs(tmp_path)[2]], nprocs=1)
    first = _batch(tmp_path, job, "-q", "--requeue-on-term")
    pid = _first_pid(tmp_path)
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not pid_alive(pid), what="the run ended")
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 143, stderr
    assert not (tmp_path / "out" / "0" / "status_code").exists()


def _first_pid(tmp_path: Path) -> int:
    path = tmp_path / "pid0"
    wait_for(lambda: path.exists() and path.read_text().strip(), what="the run to start")
    return int(path.read_text())


def test_a_run_waiting_to_retry_is_left_to_the_requeue(tmp_path, write_job) -> None:
    # It failed once; its retry is the requeued batch's (which then runs it afresh).
    cmd = f"echo $$ > {tmp_path}/pid0; echo x >> {tmp_path}/tries; [ -e {tmp_path}/gate ]"
    job = write_job([{"cmd": cmd, "retries": 2}], nprocs=1, retry_delay=300)
    first = _batch(tmp_path, job, "--requeue-on-term")
    pid = _first_pid(tmp_path)
    wait_for(lambda: not pid_alive(pid), what="the first attempt to fail")
    first.send_signal(signal.SIGTERM)
    out, stderr = first.communicate(timeout=60)
    assert first.returncode == 143, stderr
    assert "0 succeeded, 0 failed, 0 skipped, 0 not started, 1 left to the requeue" in out
    assert not (tmp_path / "out" / "0" / "status_code").exists()
    (tmp_path / "gate").touch()
    again = _batch(tmp_path, job, "-q", "--requeue-on-term", "--skip-finished")
    _, stderr = again.communicate(timeout=60)
    assert again.returncode == 0, stderr
    assert (tmp_path / "out" / "0" / "status_code").read_text() == "0\n"
    assert len((tmp_path / "tries").read_text().split()) == 2


@pytest.mark.timeout(180)
def test_a_supervisor_waiting_for_a_requeued_owner_runs_the_run(tmp_path, write_job, s3) -> None:
    # On S3 a lease given back must not read as finished: one supervisor (another
    # node's, say) waits for the run's owner; the owner is requeued; the waiting one
    # runs it.
    output = f"{s3}/waiting"
    job = write_job(_runs(tmp_path)[2:3], nprocs=1, output=output)
    owner = _batch(tmp_path, job, "-q", "--requeue-on-term", "--staging-dir", "owner")
    _first_pid(tmp_path)
    waiting = _batch(
        tmp_path, job, "-q", "--requeue-on-term", "--skip-finished", "--staging-dir", "other"
    )
    assert waiting.stderr is not None
    assert "waiting for runs whose lease another supervisor holds" in waiting.stderr.readline()
    owner.send_signal(signal.SIGTERM)
    _, stderr = owner.communicate(timeout=60)
    assert owner.returncode == 143, stderr
    wait_for(lambda: _starts(tmp_path) == 2, timeout=60, what="the waiting supervisor's start")
    (tmp_path / "gate").touch()
    _, stderr = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, stderr
    assert _stored(output, ["0/status_code"]) == [b"0\n"]


def test_int_still_records_what_it_stops(tmp_path, write_job) -> None:
    job = write_job(_runs(tmp_path)[2:], nprocs=2)
    first = _batch(tmp_path, job, "-q", "--requeue-on-term")
    held = _held_pids(tmp_path)
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 130, stderr
    assert not any(pid_alive(pid) for pid in held)
    for rank in range(2):
        run = tmp_path / "out" / str(rank)
        assert (run / "status_code").read_text() == "143\n"
        assert [e.type for e in decode_events((run / "events").read_bytes())][-1] == "terminated"


def test_a_run_that_kills_itself_with_term_is_recorded(tmp_path, write_job) -> None:
    # No stop follows its TERM: after the wait (1 s) it is the run's own failure.
    job = write_job(["kill -TERM $$", "true"], nprocs=1)
    done = _batch(tmp_path, job, "-q", "--requeue-on-term")
    _, stderr = done.communicate(timeout=60)
    assert done.returncode == 1, stderr
    assert (tmp_path / "out" / "0" / "status_code").read_text() == "143\n"
    assert (tmp_path / "out" / "1" / "status_code").read_text() == "0\n"
