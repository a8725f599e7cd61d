"""``saturn batch``: real runs, their outputs, slots, timeouts, retries, hostile runs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import CLI, pid_alive
from saturn_async.linux import PROMPT_SLICE_NS
from saturn_async.storage.layout import decode_events


def events(run_dir: Path) -> list:  # type: ignore[type-arg]
    return decode_events((run_dir / "events").read_bytes())


def test_output_layout_and_environment(tmp_path: Path, write_job, saturn) -> None:
    job = write_job(
        [
            {
                "cmd": 'echo "out $GREETING $ONLY_RUN"; echo err >&2; '
                'echo result > "$SATURN_RUN_LOCAL_RESULTS_DIR/r.txt"; '
                'echo "$SATURN_RUN_LOCAL_RANK $SATURN_RUN_REMOTE_OUTPUT_PATH" > rank.txt',
                "env": {"ONLY_RUN": "run-env"},
            },
            "exit 3",
        ],
        env={"GREETING": "hello"},
    )
    result = saturn("batch", str(job), "--quiet")
    assert result.returncode == 1, result.stderr
    run0, run1 = tmp_path / "out" / "0", tmp_path / "out" / "1"
    assert (run0 / "stdout").read_text() == "out hello run-env\n"
    assert (run0 / "stderr").read_text() == "err\n"
    assert (run0 / "status_code").read_text() == "0\n"
    assert (run0 / "results" / "r.txt").read_text() == "result\n"
    rank, path = (tmp_path / "rank.txt").read_text().split()
    assert rank in {"0", "1"} and path == str(run0)
    assert (run1 / "status_code").read_text() == "3\n"
    assert not (run1 / "results").exists(), "an empty results dir is removed"
    kinds = [e.type for e in events(run0)]
    assert kinds == ["submitted", "started", "complete"]
    first, end = events(run0)[0], events(run0)[-1]
    assert first.cmd.startswith('echo "out')
    assert end.exit_code == 0 and end.wall_seconds is not None and end.wall_seconds >= 0
    assert end.cpu_user_seconds is not None and end.peak_kib and end.peak_kib > 0
    assert [e.type for e in events(run1)][-1] == "failed"
    leftovers = [p.name for p in (tmp_path / "out").rglob("*") if ".tmp" in p.name]
    assert leftovers == []


def test_resource_record_counts_cpu(tmp_path: Path, write_job, saturn) -> None:
    burn = "python3 -c 'import time; t=time.process_time()\nwhile time.process_time()-t<0.3: pass'"
    job = write_job([burn])
    assert saturn("batch", str(job), "-q").returncode == 0
    end = events(tmp_path / "out" / "0")[-1]
    assert end.cpu_user_seconds + end.cpu_system_seconds >= 0.25


def test_slots_are_bounded_and_ranks_unique(tmp_path: Path, write_job, saturn) -> None:
    stamp = 'python3 -c "import time; print(time.time())"'
    cmd = f"{stamp}; echo $SATURN_RUN_LOCAL_RANK; sleep 0.2; {stamp}"
    job = write_job([cmd] * 9, nprocs=3)
    assert saturn("batch", str(job), "-q").returncode == 0
    spans = []
    for i in range(9):
        start, rank, end = (tmp_path / "out" / str(i) / "stdout").read_text().split()
        spans.append((float(start), float(end), int(rank)))
    assert {rank for _, _, rank in spans} <= {0, 1, 2}
    for a in spans:
        for b in spans:
            if a is not b and a[0] < b[1] and b[0] < a[1]:
                assert a[2] != b[2], "two runs overlapping in time share a rank"
    edges = sorted([(s[0], 1) for s in spans] + [(s[1], -1) for s in spans])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert 2 <= peak <= 3


def test_slots_shared_across_files(tmp_path: Path, write_job, saturn) -> None:
    # File a: one run that waits until file b's last run has started. With a slot idling
    # at the boundary between files this would deadlock (and hit the timeout).
    marker = tmp_path / "b-started"
    a = write_job(
        [f"while [ ! -e {marker} ]; do sleep 0.01; done"],
        name="a.json",
        nprocs=2,
        output=str(tmp_path / "a"),
    )
    b = write_job(
        ["true", "true", f"touch {marker}"], name="b.json", nprocs=1, output=str(tmp_path / "b")
    )
    result = saturn("batch", str(a), str(b), "-q", timeout=30)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "a" / "0" / "status_code").read_text() == "0\n"


def test_timeout_and_retries(tmp_path: Path, write_job, saturn) -> None:
    job = write_job(
        [
            {"cmd": "sleep 60", "timeout": 0.2},
            {"cmd": "echo try; exit 4", "retries": 2},
            {
                "cmd": 'n=$(cat n 2>/dev/null || echo 0); echo $((n+1)) > n; [ "$n" -ge 1 ]',
                "retries": 3,
            },
        ],
        nprocs=1,
    )
    assert saturn("batch", str(job), "-q").returncode == 1
    out = tmp_path / "out"
    assert (out / "0" / "status_code").read_text() == "143\n"
    assert [e.type for e in events(out / "0")][-1] == "timeout"
    kinds = [e.type for e in events(out / "1")]
    assert kinds.count("started") == 3 and kinds.count("retry") == 2
    assert (out / "1" / "status_code").read_text() == "4\n"
    assert (out / "1" / "stdout.1").read_text() == "try\n"
    assert (out / "1" / "stdout.2").read_text() == "try\n"
    assert [e.type for e in events(out / "2")][-1] == "complete"
    assert (out / "2" / "status_code").read_text() == "0\n"
    assert [e.attempt for e in events(out / "2") if e.type == "started"] == [1, 2]


def test_timeout_escalates_to_kill_for_runs_ignoring_term(
    tmp_path: Path, write_job, saturn
) -> None:
    job = write_job([{"cmd": "trap '' TERM; while :; do sleep 0.05; done", "timeout": 0.2}])
    assert saturn("batch", str(job), "-q", "--grace", "0.3").returncode == 1
    assert (tmp_path / "out" / "0" / "status_code").read_text() == "137\n"


def test_leftover_process_group_is_stopped(tmp_path: Path, write_job, saturn) -> None:
    job = write_job(
        [
            "sleep 600 & echo $! > pid; echo done",  # grandchild holds stdout open
            "trap '' TERM; (trap '' TERM; sleep 600) & echo $! > pid2; exit 0",
        ],
    )
    result = saturn("batch", str(job), "-q", "--grace", "0.2")
    assert result.returncode == 0, result.stderr
    for name in ("pid", "pid2"):
        pid = int((tmp_path / name).read_text())
        assert not pid_alive(pid), f"{name} survived its run"
    assert (tmp_path / "out" / "0" / "stdout").read_text() == "done\n"


def test_hostile_output(tmp_path: Path, write_job, saturn) -> None:
    job = write_job(
        [
            "head -c 1000000 /dev/urandom",
            "head -c 100000000 /dev/zero | tr '\\0' a",  # a 100 MB line, no newline
            "exec >&- 2>&-; sleep 0.1; exit 0",  # closes stdout and stderr
        ],
    )
    assert saturn("batch", str(job), "-q").returncode == 0
    out = tmp_path / "out"
    assert (out / "0" / "stdout").stat().st_size == 1_000_000
    assert (out / "1" / "stdout").stat().st_size == 100_000_000
    assert (out / "2" / "status_code").read_text() == "0\n"


def test_skip_completed_reruns_only_failures(tmp_path: Path, write_job, saturn) -> None:
    # Runs start in the directory saturn batch was started in (here tmp_path).
    job = write_job(["echo x >> count0", "echo x >> count1; [ -e fixed ]"])
    assert saturn("batch", str(job), "-q").returncode == 1
    (tmp_path / "fixed").touch()
    assert saturn("batch", str(job), "-q", "--skip-completed").returncode == 0
    assert (tmp_path / "count0").read_text() == "x\n"
    assert (tmp_path / "count1").read_text() == "x\nx\n"


def test_local_results_dir_is_collected(tmp_path: Path, write_job, saturn) -> None:
    scratch = tmp_path / "scratch" / "r0"
    job = write_job(
        [{"cmd": 'echo hi > "$SATURN_RUN_LOCAL_RESULTS_DIR/f"', "local_results_dir": str(scratch)}]
    )
    assert saturn("batch", str(job), "-q").returncode == 0
    assert (tmp_path / "out" / "0" / "results" / "f").read_text() == "hi\n"
    assert not scratch.exists()


def test_original_client_fields_are_accepted(tmp_path: Path, saturn) -> None:
    (tmp_path / "0.json").write_text(
        json.dumps(
            {
                "nprocs": 1,
                "remote_output_path": "file://" + str(tmp_path / "o") + "/",
                "runs": [
                    {
                        "remote_output_path": str(tmp_path / "o" / "a"),
                        "cmd": "true",
                        "local_results_dir": str(tmp_path / "o" / "a" / "results"),
                        "status_code": 1,
                        "status": "failed",
                    }
                ],
            }
        )
    )
    assert saturn("batch", "0.json", "-q").returncode == 0
    assert (tmp_path / "o" / "a" / "status_code").read_text() == "0\n"


def test_plain_progress_and_summary(tmp_path: Path, write_job, saturn) -> None:
    job = write_job(["true"] * 3)
    result = saturn("batch", str(job))
    assert result.returncode == 0
    assert "3 succeeded, 0 failed, 0 skipped, 0 not started in " in result.stdout
    assert "runs/s" in result.stdout
    # The end summary is not preceded by a last progress line saying nearly the same.
    assert "pending of" not in result.stderr


def test_the_end_summary_lists_the_first_failed_runs(tmp_path: Path, write_job, saturn) -> None:
    job = write_job(["true", *[f"exit {i}" for i in range(1, 14)]], nprocs=1)
    result = saturn("batch", str(job))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("1 succeeded, 13 failed, 0 skipped, 0 not started in ")
    assert lines[1] == "failed (exit code, output path, command):"
    assert lines[2:12] == [f"  {i}  {tmp_path}/out/{i}  exit {i}" for i in range(1, 11)]
    assert lines[12:] == [f"  ... 3 more; all of them: saturn status {job}"]


def _slice_ns(sched: str) -> int:
    line = next(line for line in sched.splitlines() if line.startswith("se.slice"))
    return int(line.split(":")[1])


@pytest.mark.parametrize("niceness", [5, -3])
def test_the_loop_asks_for_a_short_slice_and_runs_keep_the_defaults(
    tmp_path: Path, write_job, niceness: int
) -> None:
    own = Path("/proc/self/sched").read_text()
    if "se.slice" not in own:
        pytest.skip("this kernel has no EEVDF time slices (Linux < 6.6)")
    if niceness < 0 and os.geteuid() != 0:
        pytest.skip("a negative nice value needs root")
    job = write_job(["cat /proc/self/sched > run; cat /proc/$PPID/sched > loop; nice > nice"])
    result = subprocess.run(
        ["nice", "-n", str(niceness), *CLI, "batch", str(job), "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "nice").read_text() == f"{niceness}\n", "the run has saturn's nice value"
    assert _slice_ns((tmp_path / "run").read_text()) == _slice_ns(own), "runs get the default"
    loop_slice = _slice_ns((tmp_path / "loop").read_text())
    if niceness < 0:
        # The hint is not taken: SCHED_FLAG_RESET_ON_FORK would reset the runs' nice to 0.
        assert loop_slice == _slice_ns(own)
    else:
        assert loop_slice == PROMPT_SLICE_NS
