"""SIGHUP (a closed terminal, an ssh drop) and SIGQUIT never orphan runs.

Each signal goes to saturn's whole process group, as a terminal sends it (saturn starts
in a session of its own here); runs are in sessions of their own and get only what
saturn sends them.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import CLI, pid_alive, wait_for
from saturn_async.storage.layout import decode_events
from sweeps import events_of, write_sweep

SLEEPERS = [f"sleep 600 & echo $! > pid{i}; wait" for i in range(2)] + ["touch never"]
DEAF = [f"trap '' TERM; echo $$ > pid{i}; while :; do sleep 0.05; done" for i in range(2)]


@pytest.fixture
def runs_left() -> Iterator[list[int]]:
    """Pids of the runs a test started: any left alive (an orphan, on a failure) has its
    process group killed at the end."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if pid_alive(pid):
            with contextlib.suppress(OSError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)


def pids_started(tmp_path: Path, count: int, runs_left: list[int]) -> list[int]:
    files = [tmp_path / f"pid{i}" for i in range(count)]
    wait_for(lambda: all(f.exists() and f.read_text().strip() for f in files), what="runs to start")
    runs_left += [int(f.read_text()) for f in files]
    return runs_left[-count:]


# saturn in a session of its own whose controlling terminal is its stdin.
ON_A_TERMINAL = (
    "import fcntl, os, sys, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.executable, [sys.executable, '-m', 'saturn_async', *sys.argv[1:]])"
)


@dataclass
class BatchCase:
    name: str
    runs: list[str]
    args: list[str]
    sig: int
    code: int
    status_code: str
    last_event: str


BATCH_CASES = [
    BatchCase("HUP stops like TERM", SLEEPERS, [], signal.SIGHUP, 129, "143\n", "terminated"),
    BatchCase(
        "QUIT kills at once, whatever the grace",
        DEAF,
        ["--grace", "3600"],
        signal.SIGQUIT,
        131,
        "137\n",
        "terminated",
    ),
]


@pytest.mark.parametrize("case", BATCH_CASES, ids=[c.name for c in BATCH_CASES])
def test_batch_stops_every_run_on_hup_and_quit(
    case: BatchCase, tmp_path: Path, write_job, runs_left: list[int]
) -> None:
    job = write_job(case.runs, nprocs=2)
    proc = subprocess.Popen(
        [*CLI, "batch", str(job), "-q", *case.args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    pids = pids_started(tmp_path, 2, runs_left)
    os.killpg(proc.pid, case.sig)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == case.code, stderr
    assert "Traceback" not in stderr
    for i, pid in enumerate(pids):
        assert not pid_alive(pid)
        run = tmp_path / "out" / str(i)
        assert (run / "status_code").read_text() == case.status_code
        assert [e.type for e in decode_events((run / "events").read_bytes())][-1] == (
            case.last_event
        )
    assert not (tmp_path / "never").exists()


def test_batch_on_a_terminal_that_hangs_up(tmp_path: Path, write_job, runs_left: list[int]) -> None:
    """The real thing: the terminal's master side closes; the kernel sends SIGHUP and
    every later write to the terminal fails with EIO."""
    job = write_job(SLEEPERS, nprocs=2)
    leader, follower = pty.openpty()
    errors = tmp_path / "stderr"
    with errors.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", ON_A_TERMINAL, "batch", str(job)],  # the live display
            cwd=tmp_path,
            stdin=follower,
            stdout=follower,
            stderr=err,
        )
    os.close(follower)
    try:
        os.set_blocking(leader, False)

        def started() -> bool:
            with contextlib.suppress(BlockingIOError):
                os.read(leader, 1 << 16)  # keep the terminal drained
            return all((tmp_path / f"pid{i}").exists() for i in range(2))

        wait_for(started, what="runs to start")
        pids = pids_started(tmp_path, 2, runs_left)
    finally:
        os.close(leader)  # hang up
    assert proc.wait(timeout=30) == 129, errors.read_text()
    assert "Traceback" not in errors.read_text()
    assert not any(pid_alive(pid) for pid in pids)
    for i in range(2):
        assert (tmp_path / "out" / str(i) / "status_code").read_text() == "143\n"


@dataclass
class RunCase:
    name: str
    executor: dict[str, Any] | None
    sig: int
    code: int


RUN_CASES = [
    RunCase("LocalExecutor, HUP", None, signal.SIGHUP, 129),
    RunCase("LocalExecutor, QUIT", None, signal.SIGQUIT, 131),
    RunCase(
        "MultiprocessingExecutor, HUP to its pool too",
        {"class_spec": "MultiprocessingExecutor", "processes": 2},
        signal.SIGHUP,
        129,
    ),
    RunCase(
        "MultiprocessingExecutor, QUIT to its pool too",
        {"class_spec": "MultiprocessingExecutor", "processes": 2},
        signal.SIGQUIT,
        131,
    ),
]


@pytest.mark.parametrize("case", RUN_CASES, ids=[c.name for c in RUN_CASES])
def test_run_stops_local_runs_on_hup_and_quit(
    case: RunCase, tmp_path: Path, runs_left: list[int]
) -> None:
    tasks = [{"name": f"t{i}", "command": "echo started $$; exec sleep 300"} for i in range(3)]
    # Two at once: two slots of one supervisor, or two pool workers of a batch each.
    shape = {"nprocs": 2} if case.executor is None else {"nprocs": 1, "batch_size": 1}
    path = write_sweep(tmp_path, tasks, executor=case.executor, **shape)
    results = tmp_path / "results"
    proc = subprocess.Popen(
        [*CLI, "run", str(path), "-q"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        logs = wait_for(
            lambda: (
                (found := sorted(results.glob("*/log")))
                and len([p for p in found if p.read_text().startswith("started")]) >= 2
                and found
            ),
            timeout=60,
            what="2 running tasks",
        )
        pids = [int(p.read_text().split()[1]) for p in logs]
        runs_left += pids
        os.killpg(proc.pid, case.sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == case.code, stderr
    assert "stopping the sweep's runs" in stderr
    assert not any(pid_alive(pid) for pid in pids)
    for log in logs:
        assert log.with_name("status").read_text() == "failure\n"
        assert events_of(log.parent)[-1]["type"] == "terminated"
    assert "Traceback" not in stderr and "died unexpectedly" not in stderr, stderr


def test_daemon_treats_quit_as_term(daemon, tmp_path: Path, saturn, runs_left: list[int]) -> None:
    daemon.start("--nprocs", "1", "--shutdown-grace", "0.5", "--grace", "1")
    job = tmp_path / "job.json"
    runs = [{"cmd": f"echo $$ > {tmp_path}/pid0; exec sleep 60"}, {"cmd": "echo later"}]
    job.write_text(
        json.dumps({"nprocs": 1, "remote_output_path": str(tmp_path / "out"), "runs": runs})
    )
    assert saturn("submit", str(job), *daemon.address).returncode == 0
    (pid,) = pids_started(tmp_path, 1, runs_left)
    daemon.signal(signal.SIGQUIT)
    assert daemon.wait() == 0, daemon.log()
    assert not pid_alive(pid)
    assert (tmp_path / "out" / "0" / "status_code").read_text() == "143\n"
    assert not (tmp_path / "out" / "1" / "status_code").exists()  # still queued
    assert "SIGQUIT: finishing 1 running runs" in daemon.log()
