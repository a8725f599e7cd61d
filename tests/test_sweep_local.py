"""``saturn run / collect / terminate / status --name`` with executors on this machine."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from conftest import pid_alive, saturn_in_background, wait_for
from sweeps import assert_seed_outputs, events_of, write_sweep

LOCAL_EXECUTORS = [
    None,  # absent: LocalExecutor
    {"class_spec": "LocalExecutor"},
    {"class_spec": "MultiprocessingExecutor", "processes": 2},
    {"class_spec": "FuturesExecutor", "kwargs": {"max_workers": 2}},
    {"class_spec": "saturn_async.executors.futures:FuturesExecutor"},
]


@pytest.mark.parametrize(
    "executor", LOCAL_EXECUTORS, ids=lambda e: (e or {}).get("class_spec", "default")
)
def test_seed_run_yaml_end_to_end(tmp_path, saturn, executor):
    path = write_sweep(tmp_path, executor=executor, nprocs=2)
    done = saturn("run", str(path), "-q")
    assert done.returncode == 1, done.stderr  # lr-0.7 fails
    assert_seed_outputs(tmp_path / "results")
    status = saturn("status", "--name", "lr-sweep", "--json")
    assert status.returncode == 0, status.stderr
    assert '"succeeded": 3' in status.stdout and '"failed": 1' in status.stdout
    log = saturn("logs", str(tmp_path / "results/lr-0.7"))
    assert (log.returncode, log.stdout) == (0, "diverged\n")


def test_all_succeed_exits_0_and_unnamed_tasks_get_their_index(tmp_path, saturn):
    path = write_sweep(tmp_path, [{"command": "true"}, {"name": "b", "command": "true"}])
    done = saturn("run", str(path), "--name", "ok", "-q")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "results/0/status").read_text() == "success\n"
    assert (tmp_path / "results/b/status").read_text() == "success\n"


def test_name_in_use_is_refused_unless_replace(tmp_path, saturn):
    path = write_sweep(tmp_path, [{"command": "true"}])
    assert saturn("run", str(path), "-q").returncode == 0
    again = saturn("run", str(path), "-q")
    assert again.returncode == 2
    assert "a sweep named 'lr-sweep' exists; pass --replace" in again.stderr
    assert saturn("run", str(path), "-q", "--replace").returncode == 0


def test_prefix_generates_a_timestamped_name(tmp_path, saturn):
    path = write_sweep(tmp_path, [{"command": "true"}])
    assert saturn("run", str(path), "--prefix", "nightly", "-q").returncode == 0
    names = os.listdir(tmp_path / "state/saturn_async/sweeps")
    assert len(names) == 1 and names[0].startswith("nightly-20")


def test_unknown_name_lists_known_names(tmp_path, saturn):
    path = write_sweep(tmp_path, [{"command": "true"}])
    assert saturn("run", str(path), "-q").returncode == 0
    for command in ("collect", "terminate", "status"):
        done = saturn(command, "--name", "nope")
        assert done.returncode == 2
        assert done.stderr.strip().endswith("no sweep named 'nope' (known: lr-sweep)")
        assert "Traceback" not in done.stderr


def test_skip_completed_runs_only_what_did_not_succeed(tmp_path, saturn):
    marker = tmp_path / "count"
    tasks = [
        {"name": "ok", "command": f"echo x >> {marker}"},
        {"name": "flaky", "command": f"test -e {tmp_path}/fixed"},
    ]
    path = write_sweep(tmp_path, tasks)
    assert saturn("run", str(path), "-q").returncode == 1
    (tmp_path / "fixed").touch()
    done = saturn("run", str(path), "-q", "--replace", "--skip-completed")
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "x\n"  # "ok" did not run again
    assert (tmp_path / "results/flaky/status").read_text() == "success\n"
    assert not (tmp_path / "results/flaky/error").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"executor": {"class_spec": "MultiprocessingExecutor", "procs": 2}},
            "run.yaml: $.executor.procs: unknown field (did you mean 'processes'?)",
        ),
        ({"executor": {"class_spec": "Nope"}}, "$.executor.class_spec: unknown class_spec 'Nope'"),
        ({"executor": {"processes": 2}}, "$.executor.class_spec: required field is missing"),
        (
            {"executor": {"class_spec": "os:getcwd"}},
            "$.executor.class_spec: 'os:getcwd' is not a class",
        ),
        ({"results": {"class_spec": "LocalDir", "dir": "x"}}, "$.results.dir: unknown field"),
        (
            {"results": {"class_spec": "S3", "url": "/tmp/x"}},
            "$.results.url: '/tmp/x' is not an s3:// URL",
        ),
        (
            {"results": {"class_spec": "Dask", "directory": "r"}},
            "$.results.scheduler_address: results class_spec Dask needs a Dask scheduler",
        ),
        (
            {"tasks": [{"name": "a", "command": "true"}, {"name": "a", "command": "true"}]},
            "$.tasks[1].name: 'a' is also the name of $.tasks[0]",
        ),
        (
            {"tasks": [{"name": "../up", "command": "true"}]},
            "$.tasks[0].name: '../up' cannot name a directory",
        ),
        ({"tasks": [{"name": "a", "cmd": "true"}]}, "$.tasks[0].cmd: unknown field"),
        ({"name": "no spaces"}, "$.name: 'no spaces' is not a sweep name"),
        ({"batch_size": 0}, "$.batch_size"),
    ],
)
def test_bad_sweep_files_are_one_line_and_start_nothing(tmp_path, saturn, change, message):
    fields = {"tasks": [{"name": "a", "command": f"touch {tmp_path}/ran"}]} | change
    path = write_sweep(tmp_path, **fields)
    done = saturn("run", str(path), "-q")
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "ran").exists()
    assert not (tmp_path / "state/saturn_async/sweeps/lr-sweep").exists()


def test_missing_results_section_is_an_error(tmp_path, saturn):
    path = tmp_path / "run.yaml"
    path.write_text("name: x\ntasks: [{command: 'true'}]\n")
    done = saturn("run", str(path))
    assert done.returncode == 2
    assert done.stderr.strip() == f"saturn: error: {path}: $.results: required field is missing"


def _started_pids(results: Path, names: list[str]) -> list[int]:
    pids = []
    for name in names:
        events = events_of(results / name) if (results / name / "events").exists() else []
        pids += [e["pid"] for e in events if e["type"] == "started"]
    return pids


def _wait_running(results: Path, count: int) -> list[Path]:
    """Wait until ``count`` tasks have written their 'started' line to their log."""
    return wait_for(
        lambda: (logs := sorted(results.glob("*/log"))) and
        len([p for p in logs if p.read_text().startswith("started")]) >= count and logs,
        timeout=30, what=f"{count} running tasks",
    )  # fmt: skip


@pytest.mark.parametrize("executor", LOCAL_EXECUTORS[1:4], ids=lambda e: e["class_spec"])
def test_terminate_stops_running_and_marks_queued_tasks(tmp_path, saturn, executor):
    # 6 tasks that write their pid, then sleep; 2 slots, so 2 run and 4 wait.
    tasks = [{"name": f"t{i}", "command": "echo started $$; exec sleep 300"} for i in range(6)]
    path = write_sweep(tmp_path, tasks, executor=executor, nprocs=2, batch_size=3)
    if executor["class_spec"] != "LocalExecutor":
        path = write_sweep(
            tmp_path,
            tasks,
            executor=executor | {"processes": 1}
            if "processes" in executor
            else executor | {"kwargs": {"max_workers": 1}},
            nprocs=2,
            batch_size=3,
        )
    results = tmp_path / "results"
    with saturn_in_background("run", str(path), "-q") as run:
        logs = _wait_running(results, 2)
        pids = [int(p.read_text().split()[1]) for p in logs]
        done = saturn("terminate", "--name", "lr-sweep", "--wait", "30")
        assert done.returncode == 0, done.stderr
        # Before: "4 tasks had not finished", the 2 running ones left out.
        assert (
            "terminated lr-sweep: 6 tasks had not finished (2 were stopped or ended, "
            "4 never started)" in done.stdout
        )
        _, stderr = run.communicate(timeout=30)
    assert run.returncode == 1, stderr
    assert not any(pid_alive(pid) for pid in pids)
    for i in range(6):
        task = results / f"t{i}"
        assert task.joinpath("status").read_text() == "failure\n"
        assert task.joinpath("error").read_text() == "143\n"
        assert "terminated" in [e["type"] for e in events_of(task)]
    status = saturn("status", "--name", "lr-sweep", "--json")
    assert '"failed": 6' in status.stdout
    # Tasks that never started show their command, not `?` (None).
    commands = [run["cmd"] for run in json.loads(status.stdout)["failed_runs"]]
    assert commands == ["echo started $$; exec sleep 300"] * 6


def test_ctrl_c_on_run_stops_local_runs(tmp_path):
    tasks = [{"name": f"t{i}", "command": "echo started $$; exec sleep 300"} for i in range(3)]
    path = write_sweep(tmp_path, tasks, nprocs=2)
    with saturn_in_background("run", str(path), "-q") as run:
        logs = _wait_running(tmp_path / "results", 2)
        pids = [int(p.read_text().split()[1]) for p in logs]
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=30)
    assert run.returncode == 130
    assert "stopping the sweep's runs" in stderr
    assert not any(pid_alive(pid) for pid in pids)
    for log in logs:
        assert log.with_name("status").read_text() == "failure\n"
        assert events_of(log.parent)[-1]["type"] == "terminated"


def test_s3_results(tmp_path, saturn, s3):
    path = write_sweep(tmp_path, results={"class_spec": "S3", "url": f"{s3}/sweeps"})
    done = saturn("run", str(path), "-q", "--log-chunk-minutes", "0.05")
    assert done.returncode == 1, done.stderr
    log = saturn("logs", f"{s3}/sweeps/lr-0.5")
    assert log.stdout == "lr 0.5\nwarn 0.5\n"
    status = saturn("status", "--name", "lr-sweep", "--json")
    assert '"succeeded": 3' in status.stdout and '"failed": 1' in status.stdout
    listed = saturn("status", f"{s3}/sweeps", "--json")
    assert '"total": 4' in listed.stdout


def test_third_party_executor_from_an_entry_point(tmp_path, saturn):
    # A distribution on sys.path that declares an executor in saturn_async.executors.
    site = tmp_path / "site"
    dist = site / "thirdparty-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[saturn_async.executors]\nLoudExecutor = thirdparty:LoudExecutor\n"
    )
    (site / "thirdparty.py").write_text(
        "import sys\n"
        "from saturn_async.executors.local import LocalExecutor\n"
        "class LoudExecutor(LocalExecutor):\n"
        "    async def run(self, job, batches):\n"
        "        print(f'loud: {len(batches)} batches', file=sys.stderr)\n"
        "        await super().run(job, batches)\n"
    )
    path = write_sweep(tmp_path, [{"command": "true"}], executor={"class_spec": "LoudExecutor"})
    # The tree under test stays first on the path (when PYTHONPATH points at one).
    pythonpath = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(site)]))
    done = saturn("run", str(path), "-q", env={**os.environ, "PYTHONPATH": pythonpath})
    assert done.returncode == 0, done.stderr
    assert "loud: 1 batches" in done.stderr
    assert (tmp_path / "results/0/status").read_text() == "success\n"
    unknown = saturn("run", str(path), "-q", "--replace")  # without the distribution
    assert unknown.returncode == 2
    assert "unknown class_spec 'LoudExecutor' (known: DaskExecutor" in unknown.stderr


def test_retries_and_timeouts_in_the_sweep_layout(tmp_path, saturn):
    flag = tmp_path / "flag"
    tasks = [
        {
            "name": "flaky",
            "command": f"if [ -e {flag} ]; then echo ok; else touch {flag}; echo first >&2; exit 1; fi",
        },
        {"name": "slow", "command": "sleep 30", "timeout": 0.5, "retries": 0},
    ]
    path = write_sweep(tmp_path, tasks, retries=1)
    done = saturn("run", str(path), "-q", "--grace", "1")
    assert done.returncode == 1, done.stderr
    flaky = tmp_path / "results/flaky"
    assert (flaky / "status").read_text() == "success\n"
    assert (flaky / "log.1").read_text() == "first\n"
    assert (flaky / "log").read_text() == "ok\n"
    assert [e["type"] for e in events_of(flaky)] == [
        "submitted",
        "started",
        "failed",
        "retry",
        "started",
        "complete",
    ]
    slow = tmp_path / "results/slow"
    assert (slow / "status").read_text() == "failure\n"
    assert (slow / "error").read_text() == "143\n"
    assert events_of(slow)[-1]["type"] == "timeout"
    # Every submitted event carries the time saturn run dispatched the sweep.
    record = json.loads((tmp_path / "state/saturn_async/sweeps/lr-sweep/sweep.json").read_text())
    assert events_of(flaky)[0]["utctimestamp"] == record["created"]


def test_unwritable_results_fail_before_anything_starts(tmp_path, saturn, s3):
    blocker = tmp_path / "file"
    blocker.write_text("")
    for results in (
        {"class_spec": "LocalDir", "directory": str(blocker / "results")},
        {"class_spec": "S3", "url": "s3://no-such-bucket-here/x"},
    ):
        path = write_sweep(tmp_path, [{"command": f"touch {tmp_path}/ran"}], results=results)
        done = saturn("run", str(path), "-q")
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not (tmp_path / "ran").exists()
        assert not (tmp_path / "state/saturn_async/sweeps/lr-sweep").exists()
    assert "s3://no-such-bucket-here: HeadBucket: no such bucket" in done.stderr


def test_dry_run_prints_the_batches_and_records_nothing(tmp_path, saturn):
    path = write_sweep(tmp_path, nprocs=2, batch_size=3)
    done = saturn("run", str(path), "--dry-run")
    assert done.returncode == 0, done.stderr
    batches = [json.loads(line) for line in done.stdout.splitlines()]
    assert [len(b["runs"]) for b in batches] == [3, 1]
    assert batches[0]["runs"][0]["cmd"].startswith("echo lr 0.5")
    assert batches[0]["layout"] == "sweep"
    assert not (tmp_path / "results").exists()
    assert not (tmp_path / "state").exists()
