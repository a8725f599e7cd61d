"""Fail-fast (``--halt now|soon,fail=N|P%``, ``halt:``): on ``saturn batch``, on the
daemon per batch, and on ``saturn run``; real runs, real daemon."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import CLI, wait_for
from daemons import Daemon
from saturn_async.spec.halt import HaltPolicy, parse_halt
from saturn_async.supervisor.halt import Halt
from sweeps import events_of, write_sweep

Saturn = Callable[..., subprocess.CompletedProcess[str]]
WriteJob = Callable[..., Path]


def status(run_dir: Path) -> int | None:
    try:
        return int((run_dir / "status_code").read_text())
    except FileNotFoundError:
        return None


def waits_for(path: Path, then: str = "true") -> str:
    """A run that waits until ``path`` exists (a real condition), then runs ``then``."""
    return f"while [ ! -e {path} ]; do sleep 0.01; done; {then}"


def test_the_policy_counts_final_failures_to_its_threshold() -> None:
    assert parse_halt("never", source="x") is None
    policy = parse_halt("now,fail=10%", source="x")
    assert policy == HaltPolicy("now", percent=10)
    # P% of all the runs, rounded up, at least one (GNU parallel's count).
    assert [policy.threshold(n) for n in (1, 10, 11, 200)] == [1, 1, 2, 20]
    halt = Halt(policy, 11)
    assert not halt.run_ended("a", 0)
    assert not halt.run_ended("b", 1)
    assert not halt.run_ended("c", 143, halted=True)  # stopped by the halt: not counted
    assert halt.run_ended("d", 2) and halt.trigger == "d" and halt.trigger_status == 2
    assert not halt.run_ended("e", 1)  # once halted, later failures change nothing


def test_now_fail_1_starts_none_of_the_runs_after_the_failure(
    saturn: Saturn, write_job: WriteJob, tmp_path: Path
) -> None:
    job = write_job(["true", "exit 3", "true", "true"], nprocs=1)
    result = saturn("batch", str(job), "--halt", "now,fail=1")
    out = tmp_path / "out"
    assert result.returncode == 1, result.stderr
    assert [status(out / str(i)) for i in range(2)] == [0, 3]
    assert not (out / "2").exists() and not (out / "3").exists()  # never started
    assert "1 succeeded, 1 failed, 0 skipped, 2 not started" in result.stdout
    assert f"halted: {out / '1'} failed" in result.stdout
    assert f"halt (now,fail=1): {out / '1'} failed (exit 3)" in result.stderr


def test_now_stops_the_running_run_beside_the_failure(
    saturn: Saturn, write_job: WriteJob, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    job = write_job([f"touch {started}; sleep 300", waits_for(started, "exit 3"), "true"], nprocs=2)
    result = saturn("batch", str(job), "--halt", "now,fail=1", "--grace", "5")
    out = tmp_path / "out"
    assert result.returncode == 1, result.stderr
    assert status(out / "0") == 143
    end = events_of(out / "0")[-1]
    assert end["type"] == "halted"
    assert end["exit_code"] == 143 and end["signal"] == 15
    assert end["halted_by"] == str(out / "1")
    assert status(out / "1") == 3
    assert not (out / "2").exists()
    shown = saturn("status", str(job))
    assert f"halted by the failure of {out / '1'}" in shown.stdout
    assert "1 not finished" in shown.stdout
    document = json.loads(saturn("status", str(job), "--json").stdout)
    assert document["halted_by"] == [str(out / "1")]
    assert document["failed_runs"][0]["halted_by"] == str(out / "1")


def test_soon_lets_the_running_run_finish(write_job: WriteJob, tmp_path: Path) -> None:
    log = tmp_path / "saturn.log"
    # Run 0 finishes once the halt has been decided: it waits for the halt's line.
    finish_after_halt = (
        f"until grep -q 'halt (soon,fail=1)' {log}; do sleep 0.01; done; echo finished"
    )
    job = write_job([finish_after_halt, "exit 3", "true", "true"], nprocs=2)
    with log.open("w") as stderr:
        result = subprocess.run(
            [*CLI, "batch", str(job), "--halt", "soon,fail=1", "-q"],
            stderr=stderr,
            timeout=60,
            check=False,
        )
    out = tmp_path / "out"
    assert result.returncode == 1, log.read_text()
    assert status(out / "0") == 0
    assert (out / "0" / "stdout").read_text() == "finished\n"
    assert events_of(out / "0")[-1]["type"] == "complete"
    assert status(out / "1") == 3
    assert not (out / "2").exists() and not (out / "3").exists()
    assert "letting the running runs finish" in log.read_text()


def test_now_ends_a_wait_before_a_retry(write_job: WriteJob, tmp_path: Path) -> None:
    joblog = tmp_path / "joblog"
    # Run 1 fails once run 0's first attempt has ended (its joblog line: the header and
    # it), while run 0 waits 300 s before its retry.
    after_first_attempt = f"until [ $(wc -l < {joblog}) -ge 2 ]; do sleep 0.01; done; exit 3"
    job = write_job(
        [{"cmd": "exit 1", "retries": 3, "retry_delay": 300}, after_first_attempt], nprocs=2
    )
    result = subprocess.run(
        [*CLI, "batch", str(job), "--halt", "now,fail=1", "--joblog", str(joblog), "-q"],
        capture_output=True,
        text=True,
        timeout=60,  # not 300 s: the halt ends the wait
        check=False,
    )
    out = tmp_path / "out"
    assert result.returncode == 1, result.stderr
    events = events_of(out / "0")
    assert [e["type"] for e in events] == ["submitted", "started", "failed", "halted"]
    assert events[-1]["halted_by"] == str(out / "1")
    assert status(out / "0") == 1  # the failed attempt's status: no retry started
    assert status(out / "1") == 3


def test_percent_halts_once_that_share_of_all_runs_failed(
    saturn: Saturn, write_job: WriteJob, tmp_path: Path
) -> None:
    # 20% of 10 runs is 2 failures: the second (run 3) sets the halt off.
    runs = ["true", "exit 4", "true", "exit 5", *["true"] * 6]
    job = write_job(runs, nprocs=1)
    result = saturn("batch", str(job), "--halt", "soon,fail=20%", "-q")
    out = tmp_path / "out"
    assert result.returncode == 1, result.stderr
    assert [status(out / str(i)) for i in range(4)] == [0, 4, 0, 5]
    assert not any((out / str(i)).exists() for i in range(4, 10))
    assert f"halt (soon,fail=20%): {out / '3'} failed (exit 5), failure 2 of the 2" in (
        result.stderr
    )


def test_a_batch_files_halt_holds_for_its_own_runs_only(
    saturn: Saturn, write_job: WriteJob, tmp_path: Path
) -> None:
    halting = write_job(
        ["exit 3", "true", "true"],
        name="halting.json",
        nprocs=1,
        output=str(tmp_path / "halting"),
        halt="now,fail=1",
    )
    other = write_job(
        ["exit 1", "true", "true"], name="other.json", nprocs=1, output=str(tmp_path / "other")
    )
    result = saturn("batch", str(halting), str(other), "--nprocs", "1", "-q")
    assert result.returncode == 1, result.stderr
    assert status(tmp_path / "halting/0") == 3
    assert not (tmp_path / "halting/1").exists()
    assert [status(tmp_path / f"other/{i}") for i in range(3)] == [1, 0, 0]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("later", "expected never, now,fail=N"),
        ("now,fail=0", "fail= needs at least 1 failed run"),
        ("soon,fail=200%", "the percentage must be above 0% and below 100%"),
        ("now,success=1", "success= and done= are not supported"),
    ],
)
def test_bad_halt_values_are_one_line_and_start_nothing(
    saturn: Saturn, write_job: WriteJob, tmp_path: Path, value: str, message: str
) -> None:
    job = write_job(["true"])
    result = saturn("batch", str(job), "--halt", value)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"--halt: '{value}': {message}" in result.stderr
    assert not (tmp_path / "out").exists()
    in_file = write_job(["true"], name="in_file.json", halt=value)
    result = saturn("batch", str(in_file))
    assert result.returncode == 2
    assert f"in_file.json: $.halt: '{value}': {message}" in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_daemon_halts_the_batch_submitted_with_halt_and_no_other(
    daemon: Daemon, saturn: Saturn, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    started = tmp_path / "started"
    daemon.start("--nprocs", "3")

    def batch_file(name: str, runs: list[str]) -> Path:
        path = tmp_path / f"{name}.json"
        doc: dict[str, Any] = {
            "nprocs": 3,
            "remote_output_path": str(tmp_path / name),
            "runs": [{"cmd": c} for c in runs],
        }
        path.write_text(json.dumps(doc))
        return path

    # The other batch holds one slot until the gate opens, all through the halt.
    other = batch_file("other", [waits_for(gate, "exit 0")])
    result = saturn("submit", str(other), *daemon.address)
    assert result.returncode == 0, result.stderr
    halting = batch_file(
        "halting", [f"touch {started}; sleep 300", waits_for(started, "exit 3"), "true", "true"]
    )
    result = saturn("submit", str(halting), "--halt", "now,fail=1", *daemon.address)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: status(tmp_path / "halting/0") is not None, 60, "the halted run's status")
    assert status(tmp_path / "halting/0") == 143
    assert events_of(tmp_path / "halting/0")[-1]["halted_by"] == str(tmp_path / "halting/1")
    assert status(tmp_path / "halting/1") == 3
    info = wait_for(
        lambda: next(
            (b for b in daemon.ps().batches if b.id == "b2" and not b.queued + b.running), None
        ),
        what="the halted batch done",
    )
    assert (info.succeeded, info.failed, info.cancelled) == (0, 2, 2)
    assert not (tmp_path / "halting/2").exists() and not (tmp_path / "halting/3").exists()
    # The other batch was not touched: its run is still running, and then succeeds.
    assert [r.id for r in daemon.ps().running] == ["b1.0"]
    gate.touch()
    wait_for(lambda: status(tmp_path / "other/0") == 0, what="the other batch's run")
    assert "halt (now,fail=1)" in daemon.log()


@pytest.mark.parametrize("engine", ["LocalExecutor", "DaskExecutor"])
def test_saturn_run_halts_the_whole_sweep_on_its_executor(
    saturn: Saturn, tmp_path: Path, request: pytest.FixtureRequest, engine: str
) -> None:
    executor: dict[str, Any] = {"class_spec": engine}
    if engine == "DaskExecutor":
        executor["scheduler_address"] = request.getfixturevalue("dask_cluster").address
    started = tmp_path / "started"
    tasks = [
        {"name": "long", "command": f"touch {started}; sleep 300"},
        {"name": "bad", "command": waits_for(started, "exit 3")},
        *({"name": f"after-{i}", "command": "sleep 300"} for i in range(8)),
    ]
    path = write_sweep(tmp_path, tasks, executor=executor, nprocs=2, batch_size=2)
    result = saturn("run", str(path), "--halt", "now,fail=1", "--grace", "5", timeout=120)
    results = tmp_path / "results"
    assert result.returncode == 1, result.stderr
    assert (results / "bad/error").read_text() == "3\n"
    # The runs in flight when the halt went off were stopped; the rest never started.
    assert (results / "long/error").read_text() == "143\n"
    after = [results / str(t["name"]) for t in tasks[2:]]
    stopped = [task for task in after if (task / "status").exists()]
    assert all((task / "error").read_text() == "143\n" for task in stopped)
    assert len(stopped) < len(after)  # some never started, and record nothing
    assert f"halted: {results / 'bad'} failed" in result.stdout
    assert f"halt (now,fail=1): {results / 'bad'} failed (exit 3)" in result.stderr
    shown = saturn("status", "--name", "lr-sweep")
    assert f"halted by the failure of {results / 'bad'}" in shown.stdout


@pytest.mark.parametrize(
    ("args", "field", "message"),
    [
        (["--halt", "soon,fail=1"], "--halt", "saturn run halts now only"),
        (["--halt", "now,fail=1", "--detach"], "--halt", "not with --detach"),
        ([], "run.yaml: $.halt", "'later': expected never"),
    ],
)
def test_saturn_run_refuses_what_it_cannot_halt(
    saturn: Saturn, tmp_path: Path, args: list[str], field: str, message: str
) -> None:
    extra = {} if args else {"halt": "later"}
    path = write_sweep(tmp_path, [{"command": "true"}], **extra)
    result = saturn("run", str(path), *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and field in result.stderr and message in result.stderr
    assert not (tmp_path / "results").exists()


def test_a_daemon_restarted_mid_halt_does_not_run_what_the_halt_stopped(
    daemon: Daemon, saturn: Saturn, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    # Run 0 ignores the halt's TERM, so it is still stopping (grace 60 s) when the daemon
    # is killed; the next daemon finds it lost, and must not run it again.
    runs = [f"trap '' TERM; touch {started}; sleep 300", waits_for(started, "exit 3"), "true"]
    path = tmp_path / "halting.json"
    doc = {"nprocs": 2, "remote_output_path": str(tmp_path / "out"), "runs": runs}
    path.write_text(json.dumps({**doc, "runs": [{"cmd": c} for c in runs]}))
    daemon.start("--nprocs", "2", "--grace", "60")
    result = saturn("submit", str(path), "--halt", "now,fail=1", *daemon.address)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: "halt (now,fail=1)" in daemon.log(), 60, "the halt")
    daemon.kill()
    daemon.start("--nprocs", "2", "--grace", "1")
    info = wait_for(
        lambda: next(
            (b for b in daemon.ps().batches if b.id == "b1" and not b.queued + b.running), None
        ),
        60,
        "the halted batch done",
    )
    assert (info.succeeded, info.failed, info.cancelled) == (0, 1, 2)
    assert status(tmp_path / "out/0") is None and not (tmp_path / "out/2").exists()
    assert "a run of b1 before the restart" in daemon.log()
