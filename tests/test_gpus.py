"""GPUs per run: ``--gpus`` / ``gpus``, ``gpus_per_run``, under ``saturn batch`` and the
daemon. A device list stands for the GPUs (it is taken as given), and each run records
what it was handed and when it ran, by its own clock (``time.time`` inside the run)."""

from __future__ import annotations

import itertools
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import wait_for
from daemons import Daemon
from sweeps import write_sweep

Saturn = Callable[..., subprocess.CompletedProcess[str]]

# Records the run's devices and start time, waits for ``barrier`` runs to be in flight
# (when given), sleeps, records its end: one JSON object in $SATURN_RUN_LOCAL_RESULTS_DIR.
_RECORDER = """
import json, os, sys, time
start = time.time()
marks, barrier, nap = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
open(os.path.join(marks, str(os.getpid())), "w").close()
while len(os.listdir(marks)) < barrier:
    time.sleep(0.01)
time.sleep(nap)
record = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
                                          "SATURN_RUN_GPUS")}
record.update(start=start, end=time.time())
with open(os.path.join(os.environ["SATURN_RUN_LOCAL_RESULTS_DIR"], "gpus.json"), "w") as f:
    json.dump(record, f)
"""


@pytest.fixture(autouse=True)
def _no_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counts and lists mean what they say, on a machine whose GPUs are assigned too."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def recorder(tmp_path: Path, barrier: int = 0, nap: float = 0.05) -> str:
    """The recorder's command line; the runs given a ``barrier`` wait for each other."""
    marks = "barrier" if barrier else "marks"
    script = tmp_path / "recorder.py"
    script.write_text(_RECORDER)
    (tmp_path / marks).mkdir(exist_ok=True)
    python = shlex.quote(sys.executable)
    return f"{python} {script} {tmp_path / marks} {barrier} {nap}"


def records(out: Path, count: int) -> list[dict[str, Any]]:
    found = []
    for index in range(count):
        assert (out / str(index) / "status_code").read_text() == "0\n"
        found.append(json.loads((out / str(index) / "results" / "gpus.json").read_text()))
    return found


def devices(record: dict[str, Any]) -> set[str]:
    value = record["CUDA_VISIBLE_DEVICES"]
    assert value == record["ROCR_VISIBLE_DEVICES"] == record["SATURN_RUN_GPUS"]
    return set(value.split(",")) if value else set()


def assert_apart(found: list[dict[str, Any]]) -> None:
    """No two runs whose [start, end] overlap held a device in common."""
    for a, b in itertools.combinations(found, 2):
        if a["start"] < b["end"] and b["start"] < a["end"]:
            assert not devices(a) & devices(b), (a, b)


def most_at_once(found: list[dict[str, Any]]) -> int:
    edges = sorted([(r["start"], 1) for r in found] + [(r["end"], -1) for r in found])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def test_each_running_run_holds_its_own_device(
    tmp_path: Path, saturn: Saturn, write_job: Callable[..., Path]
) -> None:
    # The first 4 runs wait for each other: 4 at once, on all 4 devices.
    runs = [recorder(tmp_path, barrier=4)] * 4 + [recorder(tmp_path)] * 8
    job = write_job(runs, nprocs=4)
    result = saturn("batch", "-q", "--gpus", "0,1,2,3", str(job))
    assert result.returncode == 0, result.stderr
    found = records(tmp_path / "out", 12)
    assert all(len(devices(r)) == 1 for r in found)
    assert set().union(*(devices(r) for r in found[:4])) == {"0", "1", "2", "3"}
    assert_apart(found)


def test_two_gpus_per_run_halve_the_runs_at_once(
    tmp_path: Path, saturn: Saturn, write_job: Callable[..., Path]
) -> None:
    # The pool is the file's (gpus), each run holds 2 of its 4: at most 2 run at once,
    # though there are 4 slots; the first 2 wait for each other, so 2 do run at once.
    runs = [recorder(tmp_path, barrier=2)] * 2 + [recorder(tmp_path)] * 6
    job = write_job(runs, nprocs=4, gpus=[0, 1, 2, 3], gpus_per_run=2)
    result = saturn("batch", "-q", str(job))
    assert result.returncode == 0, result.stderr
    found = records(tmp_path / "out", 8)
    assert all(len(devices(r)) == 2 for r in found)
    assert most_at_once(found) == 2
    assert_apart(found)


def test_a_run_asking_for_more_waits_its_turn(
    tmp_path: Path, saturn: Saturn, write_job: Callable[..., Path]
) -> None:
    # First come, first served: run 1 (both GPUs) waits for run 0 to end, and run 2 (one
    # GPU, which would fit beside run 0) waits behind run 1 instead of starving it.
    runs: list[str | dict[str, Any]] = [
        recorder(tmp_path, nap=0.3),
        {"cmd": recorder(tmp_path), "gpus_per_run": 2},
        recorder(tmp_path),
        {"cmd": recorder(tmp_path), "gpus_per_run": 0},
    ]
    job = write_job(runs, nprocs=4)
    result = saturn("batch", "-q", "--gpus", "2", str(job))
    assert result.returncode == 0, result.stderr
    first, both, after, none = records(tmp_path / "out", 4)
    assert devices(both) == {"0", "1"} and devices(none) == set()
    assert both["start"] >= first["end"]
    assert after["start"] >= both["end"]
    assert_apart([first, both, after])


def test_the_daemon_hands_out_its_gpus(daemon: Daemon, tmp_path: Path, saturn: Saturn) -> None:
    daemon.start("--nprocs", "4", "--gpus", "0,1,2,3")
    runs = [recorder(tmp_path, barrier=2)] * 2 + [recorder(tmp_path)] * 4
    job = tmp_path / "job.json"
    job.write_text(
        json.dumps(
            {
                "nprocs": 4,
                "remote_output_path": str(tmp_path / "out"),
                "gpus_per_run": 2,
                "runs": [{"cmd": cmd} for cmd in runs],
            }
        )
    )
    result = saturn("submit", str(job), *daemon.address)
    assert result.returncode == 0, result.stderr
    wait_for(
        lambda: all((tmp_path / f"out/{i}/status_code").exists() for i in range(6)),
        60,
        "the daemon's runs",
    )
    found = records(tmp_path / "out", 6)
    assert all(len(devices(r)) == 2 for r in found)
    assert most_at_once(found) == 2
    assert_apart(found)
    job.write_text(json.dumps({**json.loads(job.read_text()), "gpus_per_run": 5}))
    refused = saturn("submit", str(job), *daemon.address)
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "$.gpus_per_run: asks for 5 GPUs per run; the pool" in refused.stderr


@pytest.mark.parametrize(
    ("args", "fields", "message"),
    [
        (["--gpus", "x"], {}, "--gpus: 'x' is not a GPU"),
        (["--gpus", "0,0"], {}, "--gpus: '0,0' names a device twice"),
        (["--gpus", "0"], {}, "--gpus: 0 is not a GPU count"),
        (["--gpus", "2"], {"gpus_per_run": 3}, "$.gpus_per_run: asks for 3 GPUs per run"),
        ([], {"gpus_per_run": 1}, "no GPU pool is given"),
        ([], {"gpus": "0,x"}, "job.json: $.gpus: 'x' is not a GPU"),
        ([], {"gpus": 0}, "job.json: $.gpus: expected `int` >= 1"),
    ],
)
def test_bad_gpu_settings_are_one_line(
    args: list[str],
    fields: dict[str, Any],
    message: str,
    tmp_path: Path,
    saturn: Saturn,
    write_job: Callable[..., Path],
) -> None:
    job = write_job(["touch ran"], **fields)
    result = saturn("batch", "-q", *args, str(job))
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "ran").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("visible", ["", "-1"])
def test_all_without_a_gpu_is_one_line(
    visible: str, tmp_path: Path, saturn: Saturn, write_job: Callable[..., Path]
) -> None:
    # No GPU is visible to this process: 'all' finds none, whatever the machine has.
    job = write_job(["touch ran"])
    hidden = {**os.environ, "CUDA_VISIBLE_DEVICES": visible}
    result = saturn("batch", "-q", "--gpus", "all", str(job), env=hidden)
    assert result.returncode == 2
    assert result.stderr.startswith("saturn: error: --gpus: no GPU found for 'all'")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out").exists()


def test_all_is_what_the_process_may_see(
    tmp_path: Path, saturn: Saturn, write_job: Callable[..., Path]
) -> None:
    # Ray, Slurm and container runtimes start saturn with its share in the variable.
    job = write_job([recorder(tmp_path), recorder(tmp_path)], nprocs=1)
    visible = {**os.environ, "CUDA_VISIBLE_DEVICES": "5,7"}
    result = saturn("batch", "-q", "--gpus", "all", str(job), env=visible)
    assert result.returncode == 0, result.stderr
    assert [devices(r) for r in records(tmp_path / "out", 2)] == [{"5"}, {"5"}]
    result = saturn("batch", "-q", "--gpus", "1", "--skip-completed", str(job), env=visible)
    assert result.returncode == 0, result.stderr


def test_a_run_asking_for_more_than_the_pool_is_refused(
    tmp_path: Path, saturn: Saturn, write_job: Callable[..., Path]
) -> None:
    job = write_job(["true", {"cmd": "touch ran", "gpus_per_run": 3}])
    result = saturn("batch", "-q", "--gpus", "0,1", str(job))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"saturn: error: {job}: $.runs[1].gpus_per_run: asks for 3 GPUs; the pool (--gpus) has 2"
    )
    assert not (tmp_path / "out").exists()


def sweep_records(results: Path, count: int) -> list[dict[str, Any]]:
    found = []
    for index in range(count):
        assert (results / str(index) / "status").read_text() == "success\n"
        found.append(json.loads((results / str(index) / "results" / "gpus.json").read_text()))
    return found


def test_batches_in_one_process_share_its_pool(tmp_path: Path, saturn: Saturn) -> None:
    # Two batches at once, on two threads, each with 2 slots: 2 GPUs for the 4 slots.
    tasks = [{"command": recorder(tmp_path, barrier=2)}] * 2
    tasks += [{"command": recorder(tmp_path)}] * 6
    threads = "concurrent.futures:ThreadPoolExecutor"
    executor = {"class_spec": "FuturesExecutor", "factory": threads, "kwargs": {"max_workers": 2}}
    path = write_sweep(tmp_path, tasks, executor=executor, nprocs=2, batch_size=2, gpus=[0, 1])
    done = saturn("run", str(path), "-q")
    assert done.returncode == 0, done.stderr
    found = sweep_records(tmp_path / "results", 8)
    assert all(len(devices(r)) == 1 for r in found)
    assert most_at_once(found) == 2
    assert_apart(found)


def test_ray_reserves_the_gpus_of_a_batch(tmp_path: Path, saturn: Saturn, ray_address: str) -> None:
    # Each batch (1 slot, 1 GPU a run) reserves 1 of the cluster's 2 GPUs; Ray's
    # CUDA_VISIBLE_DEVICES for the batch is its pool (gpus: all, by default).
    tasks = [{"command": recorder(tmp_path)}] * 4
    executor = {"class_spec": "RayExecutor", "address": ray_address}
    path = write_sweep(tmp_path, tasks, executor=executor, nprocs=1, batch_size=1, gpus_per_run=1)
    done = saturn("run", str(path), "-q", timeout=120)
    assert done.returncode == 0, done.stderr
    found = sweep_records(tmp_path / "results", 4)
    assert all(devices(r) <= {"0", "1"} and len(devices(r)) == 1 for r in found)
    assert_apart(found)


def test_kubernetes_pods_ask_for_the_gpus_of_their_batch(tmp_path: Path, saturn: Saturn) -> None:
    executor = {"class_spec": "KubernetesExecutor", "image": "ghcr.io/example/saturn:1"}
    results = {"class_spec": "S3", "url": "s3://sweep-bucket/sweeps"}
    tasks = [{"command": "true", "gpus_per_run": 2}, {"command": "true"}] * 2
    path = write_sweep(tmp_path, tasks, executor=executor, results=results, nprocs=2, batch_size=2)
    done = saturn("run", str(path), "--dry-run")
    assert done.returncode == 0, done.stderr
    job = list(yaml.safe_load_all(done.stdout))[-1]
    resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["limits"] == {"nvidia.com/gpu": "4"}  # 2 slots x 2 GPUs
    assert resources["requests"] == {"cpu": "2", "nvidia.com/gpu": "4"}


def test_a_sweep_task_asking_for_more_than_the_pool_is_refused(
    tmp_path: Path, saturn: Saturn
) -> None:
    tasks = [{"command": "true"}, {"command": "touch ran", "gpus_per_run": 3}]
    path = write_sweep(tmp_path, tasks, gpus="0,1")
    done = saturn("run", str(path), "-q")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"saturn: error: {path}: $.tasks[1].gpus_per_run: asks for 3 GPUs per run; "
        "the pool ($.gpus) has 2"
    )
    assert not (tmp_path / "ran").exists()
