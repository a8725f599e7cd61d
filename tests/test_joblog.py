"""``--joblog`` on ``batch`` and ``run``, and ``status --joblog``: GNU parallel's format."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime
from pathlib import Path

from conftest import CLI, wait_for
from saturn_async.storage.layout import decode_events
from sweeps import write_sweep

HEADER = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand"


def rows(joblog: Path) -> list[list[str]]:
    lines = joblog.read_text().splitlines()
    assert lines[0] == HEADER
    return [line.split("\t") for line in lines[1:]]


def test_batch_joblog_has_one_line_per_attempt_in_parallels_format(
    tmp_path, write_job, saturn
) -> None:
    job = write_job(
        [
            "printf hello",
            {"cmd": "printf 'no\\n'; exit 3", "retries": 1},
            "kill -9 $$",
            "printf '%s' 'tab\there'\necho second line",
        ]
    )
    done = saturn("batch", "-q", "--joblog", "jobs.tsv", str(job))
    assert done.returncode == 1, done.stderr
    found = rows(tmp_path / "jobs.tsv")
    assert sorted(int(r[0]) for r in found) == [1, 2, 2, 3, 4]  # run 2 ran twice
    by_seq = {int(r[0]): r for r in found}
    assert all(len(r) == 9 and r[1] == ":" and r[4] == "0" for r in found)
    assert by_seq[1][5:8] == ["5", "0", "0"]  # Receive: bytes of stdout
    assert by_seq[3][6:8] == ["137", "9"]
    assert by_seq[4][8] == "printf '%s' 'tab\\there'\\necho second line"
    assert [r[5:8] for r in found if r[0] == "2"] == [["3", "3", "0"], ["3", "3", "0"]]
    run = tmp_path / "out" / "0"
    started = next(e for e in decode_events((run / "events").read_bytes()) if e.type == "started")
    assert by_seq[1][2] == f"{datetime.fromisoformat(started.utctimestamp).timestamp():.3f}"
    start, runtime = by_seq[1][2], by_seq[1][3]
    assert len(start.split(".")[1]) == 3 and len(runtime) == 10 and runtime.strip() != runtime


def test_an_attempt_that_cannot_start_has_its_line(tmp_path, write_job, saturn) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "blocker").write_text("a file where a run directory should go\n")
    job = write_job(
        [{"cmd": "true", "remote_output_path": str(tmp_path / "out" / "blocker" / "x")}, "true"]
    )
    assert saturn("batch", "-q", "--joblog", "jobs.tsv", str(job)).returncode == 1
    found = {r[0]: r for r in rows(tmp_path / "jobs.tsv")}
    assert found["1"][3].strip() == "0.000" and found["1"][5:8] == ["0", "127", "0"]
    assert found["2"][6] == "0"


def test_batch_joblog_gets_each_line_as_its_attempt_ends(tmp_path, write_job) -> None:
    gate = tmp_path / "gate"
    job = write_job(["echo first", f"while [ ! -e {gate} ]; do sleep 0.05; done"], nprocs=2)
    joblog = tmp_path / "jobs.tsv"
    proc = subprocess.Popen([*CLI, "batch", "-q", "--joblog", str(joblog), str(job)])
    try:
        wait_for(lambda: joblog.exists() and len(joblog.read_text().splitlines()) == 2)
        assert proc.poll() is None  # the second run still runs
        assert rows(joblog)[0][0] == "1"
        gate.touch()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [r[0] for r in rows(joblog)] == ["1", "2"]


def test_joblog_is_appended_to_and_other_files_are_refused(tmp_path, write_job, saturn) -> None:
    job = write_job(["true"])
    joblog = tmp_path / "jobs.tsv"
    assert saturn("batch", "-q", "--joblog", str(joblog), str(job)).returncode == 0
    assert saturn("batch", "-q", "--joblog", str(joblog), str(job)).returncode == 0
    assert [r[0] for r in rows(joblog)] == ["1", "1"]  # one header, both lines

    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    done = saturn("batch", "-q", "--joblog", str(notes), str(write_job(["touch ran"])))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "is not a joblog" in done.stderr
    assert notes.read_text() == "mine\n"
    assert not (tmp_path / "ran").exists()


def test_joblog_in_a_run_output_or_not_creatable_is_refused(tmp_path, write_job, saturn) -> None:
    job = write_job(["touch ran"])
    for path in (tmp_path / "out" / "0" / "jobs.tsv", tmp_path / "missing" / "jobs.tsv"):
        done = saturn("batch", "-q", "--joblog", str(path), str(job))
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and "--joblog" in done.stderr
        assert not (tmp_path / "ran").exists() and not path.exists()
    os.mkfifo(tmp_path / "fifo")
    done = saturn("batch", "-q", "--joblog", str(tmp_path / "fifo"), str(job))
    assert done.returncode == 2 and not (tmp_path / "ran").exists()


def test_run_joblog_with_the_local_executor(tmp_path, saturn) -> None:
    path = write_sweep(tmp_path, nprocs=2)
    done = saturn("run", str(path), "-q", "--joblog", "sweep.tsv")
    assert done.returncode == 1, done.stderr
    found = sorted(rows(tmp_path / "sweep.tsv"), key=lambda r: int(r[0]))
    assert [(r[0], r[6]) for r in found] == [("1", "0"), ("2", "0"), ("3", "0"), ("4", "3")]
    assert found[0][8].startswith("echo lr 0.5;")
    log = tmp_path / "results" / "lr-0.5" / "log"
    assert found[0][5] == str(log.stat().st_size)


def test_run_joblog_refuses_s3_results_and_detach_before_anything_starts(tmp_path, saturn) -> None:
    s3_results = write_sweep(tmp_path, results={"class_spec": "S3", "url": "s3://bucket/r"})
    done = saturn("run", str(s3_results), "-q", "--joblog", "sweep.tsv")
    assert done.returncode == 2 and "--joblog: needs a local results directory" in done.stderr
    done = saturn("run", str(write_sweep(tmp_path)), "-q", "--detach", "--joblog", "sweep.tsv")
    assert done.returncode == 2 and "--joblog: is written while saturn run" in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "sweep.tsv").exists() and not (tmp_path / "results").exists()


def test_status_joblog_writes_the_same_lines_from_outputs(tmp_path, write_job, saturn) -> None:
    job = write_job(["printf a", {"cmd": "echo x; exit 2", "retries": 1}, "true"])
    assert saturn("batch", "-q", "--joblog", "live.tsv", str(job)).returncode == 1
    live = sorted(rows(tmp_path / "live.tsv"))
    for source in (str(job), str(tmp_path / "out")):
        target = tmp_path / f"after-{len(source)}.tsv"
        done = saturn("status", "--joblog", str(target), source)
        assert done.returncode == 0, done.stderr
        assert sorted(rows(target)) == live


def test_status_joblog_of_a_sweep(tmp_path, saturn) -> None:
    path = write_sweep(tmp_path)
    assert saturn("run", str(path), "-q").returncode == 1
    done = saturn("status", "--name", "lr-sweep", "--joblog", "sweep.tsv")
    assert done.returncode == 0, done.stderr
    assert [(r[0], r[6]) for r in rows(tmp_path / "sweep.tsv")] == [
        ("1", "0"),
        ("2", "0"),
        ("3", "0"),
        ("4", "3"),
    ]
