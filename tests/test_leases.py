"""One owner per run (leases) and lost runs told apart, with real supervisors: local
outputs and s3:// outputs on moto_server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from conftest import pid_alive, wait_for
from saturn_async.storage.s3 import S3Storage
from saturn_async.supervisor.lease import Holder, decode, encode, new_holder
from saturn_async.supervisor.s3_lease import S3Lease

Saturn = Callable[..., subprocess.CompletedProcess[str]]
CLI = [sys.executable, "-m", "saturn_async"]


def gated_job(tmp_path: Path, root: str, count: int, nprocs: int) -> Path:
    """Runs that append their index to ``starts``, then wait for ``gate`` to exist."""
    starts, gate = tmp_path / "starts", tmp_path / "gate"
    runs = [
        {"cmd": f"echo {i} >> {starts}; while [ ! -e {gate} ]; do sleep 0.02; done"}
        for i in range(count)
    ]
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"nprocs": nprocs, "remote_output_path": root, "runs": runs}))
    return job


def starts(tmp_path: Path) -> Counter[str]:
    path = tmp_path / "starts"
    return Counter(path.read_text().split()) if path.exists() else Counter()


def start_count(tmp_path: Path) -> int:
    return sum(starts(tmp_path).values())


def status(saturn: Saturn, job: Path) -> dict[str, Any]:
    result = saturn("status", str(job), "--json")
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@pytest.fixture(params=["local", "s3"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def root(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "s3":
        return f"{request.getfixturevalue('s3')}/out"
    return str(tmp_path / "out")


class Batch:
    """``saturn batch JOB -q ARGS`` in the background, with its own staging directory (so
    that on s3:// only the lease objects keep two supervisors of one host apart); its
    stdout and stderr go to files."""

    def __init__(self, tmp_path: Path, job: Path, name: str, *args: str) -> None:
        self.out, self.err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [*CLI, "batch", str(job), "-q", "--staging-dir", str(tmp_path / name), *args],
                cwd=tmp_path,
                stdout=out,
                stderr=err,
            )
        self.pid = self.proc.pid

    def wait(self) -> int:
        return self.proc.wait(timeout=120)

    def said(self) -> str:
        return self.err.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        """Stop it and its runs (TERM: they end within the grace), KILL if it lingers."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def batches() -> Iterator[Callable[..., Batch]]:
    started: list[Batch] = []

    def start(*args: Any) -> Batch:
        started.append(Batch(*args))
        return started[-1]

    yield start
    for each in started:
        each.stop()


def this_host() -> str:
    return socket.gethostname()


def test_two_supervisors_started_together_start_each_run_once(
    tmp_path: Path, root: str, saturn: Saturn, batches: Callable[..., Batch]
) -> None:
    job = gated_job(tmp_path, root, count=8, nprocs=2)
    first, second = batches(tmp_path, job, "a"), batches(tmp_path, job, "b")
    # Both hold two runs (neither can finish one before the gate opens)...
    wait_for(lambda: start_count(tmp_path) == 4, timeout=60)
    (tmp_path / "gate").touch()
    assert (first.wait(), second.wait()) == (0, 0), first.said() + second.said()
    # ... and each of the 8 started exactly once, by one of them.
    assert starts(tmp_path) == Counter(str(i) for i in range(8))
    report = status(saturn, job)
    assert (report["succeeded"], report["lost"], report["not_finished"]) == (8, 0, 0)
    assert "whose lease another supervisor holds" in first.said() + second.said()


def test_a_live_owner_is_neither_rerun_nor_run_beside(
    tmp_path: Path, root: str, saturn: Saturn, batches: Callable[..., Batch]
) -> None:
    job = gated_job(tmp_path, root, count=2, nprocs=2)
    owner = batches(tmp_path, job, "owner")
    wait_for(lambda: start_count(tmp_path) == 2, timeout=60)
    for args in ((), ("--skip-completed",)):
        second = batches(tmp_path, job, f"second{len(args)}", *args)
        assert second.wait() == 0, second.said()
        lines = [line for line in second.said().splitlines() if "lease" in line]
        assert lines == [
            f"skipped 2 runs whose lease another supervisor holds (host {this_host()} "
            f"pid {owner.pid}); --wait-for-owner waits for them"
        ], second.said()
    assert start_count(tmp_path) == 2
    report = status(saturn, job)
    assert (report["lost"], report["not_finished"]) == (0, 2)
    (tmp_path / "gate").touch()
    assert owner.wait() == 0
    assert starts(tmp_path) == Counter({"0": 1, "1": 1})


def test_wait_for_owner_waits_then_skips_what_the_owner_finished(
    tmp_path: Path, root: str, batches: Callable[..., Batch]
) -> None:
    job = gated_job(tmp_path, root, count=2, nprocs=2)
    owner = batches(tmp_path, job, "owner")
    wait_for(lambda: start_count(tmp_path) == 2, timeout=60)
    waiter = batches(tmp_path, job, "waiter", "--wait-for-owner")
    wait_for(lambda: "waiting for runs whose lease" in waiter.said(), timeout=60)
    assert f"(host {this_host()} pid {owner.pid})" in waiter.said()
    (tmp_path / "gate").touch()
    assert owner.wait() == 0
    assert waiter.wait() == 0, waiter.said()
    assert "skipped 2 runs another supervisor finished while this one ran" in waiter.said()
    assert starts(tmp_path) == Counter({"0": 1, "1": 1})


def test_wait_for_owner_runs_what_a_dead_owner_lost(
    tmp_path: Path, root: str, saturn: Saturn, batches: Callable[..., Batch]
) -> None:
    job, pids = pid_job(tmp_path, root)
    owner = batches(tmp_path, job, "owner")
    wait_for(lambda: len(run_pids(pids)) == 1, timeout=60)
    waiter = batches(tmp_path, job, "waiter", "--wait-for-owner")
    wait_for(lambda: "waiting for runs whose lease" in waiter.said(), timeout=60)
    (tmp_path / "gate").touch()  # the owner's run would finish now, but it dies first
    kill_supervisor_and_runs(owner, run_pids(pids))
    assert waiter.wait() == 0, waiter.said()
    assert len(run_pids(pids)) == 2  # the lost run ran again, by the waiter
    report = status(saturn, job)
    assert (report["succeeded"], report["lost"], report["not_finished"]) == (2, 0, 0)


def pid_job(tmp_path: Path, root: str) -> tuple[Path, Path]:
    """A quick run, then (one slot: after the first has recorded its status) one that
    records its pid and waits for ``gate``."""
    gate, pids = tmp_path / "gate", tmp_path / "pids"
    runs = [
        {"cmd": "true"},
        {"cmd": f"echo $$ >> {pids}; while [ ! -e {gate} ]; do sleep 0.02; done"},
    ]
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"nprocs": 1, "remote_output_path": root, "runs": runs}))
    return job, pids


def run_pids(pids: Path) -> list[int]:
    return [int(p) for p in pids.read_text().split()] if pids.exists() else []


def kill_supervisor_and_runs(supervisor: Batch, pids: list[int]) -> None:
    """SIGKILL a supervisor and its runs' groups, as a machine losing them would."""
    supervisor.proc.send_signal(signal.SIGKILL)
    supervisor.wait()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=10)


def test_a_killed_supervisors_run_is_lost_and_skip_completed_reruns_it(
    tmp_path: Path, root: str, saturn: Saturn, batches: Callable[..., Batch]
) -> None:
    job, pids = pid_job(tmp_path, root)
    supervisor = batches(tmp_path, job, "killed")
    wait_for(lambda: len(run_pids(pids)) == 1, timeout=60)
    kill_supervisor_and_runs(supervisor, run_pids(pids))

    report = status(saturn, job)
    lost_path = f"{root}/1"
    # The quick run succeeded; on s3:// the ledger segment saying so was not written.
    assert report["lost"] == 1 and report["succeeded"] + report["not_finished"] == 1
    assert report["lost_runs"] == [{"path": lost_path, "host": this_host(), "pid": supervisor.pid}]
    text = saturn("status", str(job)).stdout
    assert "1 lost" in text and lost_path in text

    (tmp_path / "gate").touch()
    rerun = saturn("batch", str(job), "--skip-completed", "-q", timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    assert len(run_pids(pids)) == 2  # run 1 ran again
    report = status(saturn, job)
    assert (report["succeeded"], report["lost"], report["not_finished"]) == (2, 0, 0)


def test_a_renewal_that_landed_unanswered_does_not_keep_the_lease_from_its_release(
    s3: str,
) -> None:
    # A renewal cut off by a partition may reach S3 once the link is back, after the
    # supervisor gave up on its answer: the lease object changed under the ETag the holder
    # knows, and the conditional release was refused (412), leaving no tombstone.
    async def main() -> Holder | None:
        async with S3Storage() as storage:
            lease = S3Lease(storage, f"{s3}/run", ttl=60)
            assert await lease.try_acquire(new_holder()) is None
            found = await storage.get_tagged(lease.location)
            assert found is not None
            landed = msgspec.structs.replace(decode(found[0]), expires=time.time() + 60)
            assert await storage.put_if(lease.location, encode(landed), found[1]) is not None
            await lease.release(finished=True)
            return decode(await storage.get(lease.location))

    holder = anyio.run(main)
    assert holder is not None and holder.released is not None, holder
