"""``saturn run / collect / terminate`` through RayExecutor on a real local Ray."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import ray

from conftest import pid_alive, saturn_in_background, saturn_without, wait_for
from saturn_async.executors.jobs import RayActor, WorkerJob
from saturn_async.executors.ray.actor import SweepActor, actor_name
from saturn_async.executors.ray.worker import NAMESPACE
from saturn_async.executors.worker import run_batches
from saturn_async.spec.models import Batch, Run
from saturn_async.sweep.state import load_record
from sweeps import (
    assert_seed_outputs,
    attempts_in,
    chunks_of,
    counted_tasks,
    detach_then_collect,
    events_of,
    gated_tasks,
    kill_tree,
    starts_of,
    write_sweep,
)


def ray_executor(address: str | None, **fields: object) -> dict[str, object]:
    return {"class_spec": "RayExecutor", **({"address": address} if address else {}), **fields}


def test_seed_run_yaml_on_a_ray_cluster(tmp_path, saturn, ray_address):
    path = write_sweep(tmp_path, executor=ray_executor(ray_address), nprocs=1)
    done = saturn("run", str(path), "-q", timeout=120)
    assert done.returncode == 1, done.stderr
    assert_seed_outputs(tmp_path / "results")
    assert "lr-0.7" in saturn("status", "--name", "lr-sweep").stdout


def test_s3_results_from_ray_workers(tmp_path, saturn, ray_address, s3):
    # The workers started before the AWS variables were set: runtime_env brings them.
    names = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
    runtime_env = {"env_vars": {name: os.environ[name] for name in names}}
    executor = ray_executor(ray_address, runtime_env=runtime_env)
    results = {"class_spec": "S3", "url": f"{s3}/sweeps"}
    path = write_sweep(tmp_path, executor=executor, results=results, nprocs=1)
    done = saturn("run", str(path), "-q", "--log-chunk-minutes", "0.02", timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr == "", done.stderr  # no batch error, no unfinished task
    log = saturn("logs", f"{s3}/sweeps/lr-0.5")
    assert log.stdout == "lr 0.5\nwarn 0.5\n", log.stderr
    failed = saturn("logs", f"{s3}/sweeps/lr-0.7")
    assert failed.stdout == "diverged\n", failed.stderr
    status = saturn("status", "--name", "lr-sweep", "--json")
    assert '"succeeded": 3' in status.stdout and '"failed": 1' in status.stdout, status.stdout


def test_local_ray_started_by_saturn_run(tmp_path, saturn):
    # No address: saturn run starts a Ray of its own, which ends with it.
    executor = ray_executor(None, num_cpus=2)
    path = write_sweep(tmp_path, executor=executor, nprocs=1)
    done = saturn("run", str(path), "-q", timeout=120)
    assert done.returncode == 1, done.stderr
    assert_seed_outputs(tmp_path / "results")
    again = saturn("collect", "--name", "lr-sweep", "-q")
    assert again.returncode == 1
    detach = saturn("run", str(path), "-q", "--replace", "--detach")
    assert detach.returncode == 2
    assert "RayExecutor cannot detach" in detach.stderr


def test_ctrl_c_detaches_and_collect_gets_everything(tmp_path, saturn, ray_address):
    gate = tmp_path / "gate"
    executor = ray_executor(ray_address)
    path = write_sweep(tmp_path, gated_tasks(gate), executor=executor, nprocs=1)
    detach_then_collect(saturn, tmp_path / "results", gate, str(path), "-q")
    for i in range(4):
        task = tmp_path / "results" / f"t{i}"
        assert task.joinpath("status").read_text() == "success\n"
        assert task.joinpath("log").read_text() == f"started\ndone {i}\n"


def test_terminate_cancels_queued_and_stops_running(tmp_path, saturn, ray_address):
    # A batch reserves nprocs=2 of the cluster's 2 CPUs: batch 0 runs, batch 1 waits.
    tasks = [{"name": f"t{i}", "command": "echo $$; exec sleep 300"} for i in range(4)]
    executor = ray_executor(ray_address)
    path = write_sweep(tmp_path, tasks, executor=executor, nprocs=2, batch_size=2)
    done = saturn("run", str(path), "-q", "--detach", "--grace", "2")
    assert done.returncode == 0, done.stderr

    def running_pids() -> list[int]:
        logs = [p.read_text() for p in (tmp_path / "results").glob("*/log")]
        pids = [int(text) for text in logs if text.strip()]
        return pids if len(pids) == 2 else []

    pids = wait_for(running_pids, timeout=60, what="2 running tasks")
    stopped = saturn("terminate", "--name", "lr-sweep", "--wait", "60", timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert (
        "terminated lr-sweep: 4 tasks had not finished (2 were stopped or ended, "
        "2 never started)" in stopped.stdout
    )
    assert not any(pid_alive(pid) for pid in pids)
    for i in range(4):
        task = tmp_path / "results" / f"t{i}"
        assert task.joinpath("status").read_text() == "failure\n"
        assert "terminated" in [e["type"] for e in events_of(task)]
    # The queued batch was cancelled, never started: its tasks have no log.
    assert sorted(p.parent.name for p in (tmp_path / "results").glob("*/log")) == ["t0", "t1"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"adress": "auto"}, "$.executor.adress: unknown field (did you mean 'address'?)"),
        ({"num_gpus": "one"}, "$.executor.num_gpus: expected `float`, got `str`"),
        ({"num_gpus": -1}, "$.executor.num_gpus: expected `float` >= 0.0"),
        ({"num_cpus": 0}, "$.executor.num_cpus: expected `int` >= 1"),
        ({"resources": {"slot": -2}}, "$.executor.resources[...]: expected `float` >= 0.0"),
        ({"max_retries": -1}, "$.executor.max_retries: expected `int` >= 0"),
    ],
)
def test_bad_executor_section_is_one_line(tmp_path, saturn, fields, message):
    path = write_sweep(tmp_path, executor=ray_executor(None, **fields))
    done = saturn("run", str(path), "-q")
    assert done.returncode == 2
    assert done.stderr.strip().endswith(message), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "state").exists()


def test_without_ray_installed_names_the_extra(tmp_path):
    path = write_sweep(tmp_path, executor=ray_executor(None))
    done = saturn_without("ray", "run", str(path), "-q")
    assert done.returncode == 2
    assert "RayExecutor needs the extra: pip install 'saturn_async[ray]'" in done.stderr


@pytest.mark.parametrize("address", ["127.0.0.1:9", "ray://127.0.0.1:9"])
def test_unreachable_address_is_one_line(tmp_path, saturn, address):
    path = write_sweep(tmp_path, executor=ray_executor(address))
    done = saturn("run", str(path), "-q")
    assert done.returncode == 2
    assert f"$.executor.address: cannot start or reach Ray at {address}: " in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_ray_results_reach_the_client_through_the_actor(tmp_path, saturn, ray_address):
    results = {"class_spec": "Ray", "directory": str(tmp_path / "results")}
    path = write_sweep(tmp_path, executor=ray_executor(ray_address), results=results, nprocs=1)
    done = saturn("run", str(path), "-q", "--log-chunk-minutes", "0.02", timeout=120)
    assert done.returncode == 1, done.stderr
    assert_seed_outputs(tmp_path / "results")


def test_ray_results_need_the_ray_executor(tmp_path, saturn):
    results = {"class_spec": "Ray", "directory": str(tmp_path / "results")}
    path = write_sweep(tmp_path, results=results)
    done = saturn("run", str(path), "-q")
    assert done.returncode == 2
    assert "$.results.class_spec: results class_spec Ray needs executor class_spec RayExecutor" in (
        done.stderr
    )
    assert not (tmp_path / "results").exists()


def test_ctrl_c_on_a_local_ray_stops_the_runs(tmp_path, saturn):
    tasks = [{"name": f"t{i}", "command": "echo $$; exec sleep 300"} for i in range(2)]
    path = write_sweep(tmp_path, tasks, executor=ray_executor(None, num_cpus=2), nprocs=1)

    def running_pids() -> list[int]:
        logs = [p.read_text() for p in (tmp_path / "results").glob("*/log")]
        pids = [int(text) for text in logs if text.strip()]
        return pids if len(pids) == 2 else []

    with saturn_in_background("run", str(path), "-q", "--grace", "1") as run:
        pids = wait_for(running_pids, timeout=90, what="2 running tasks")
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130, stderr
    assert "stopping the sweep's runs" in stderr
    assert not any(pid_alive(pid) for pid in pids)
    for i in range(2):
        assert (tmp_path / "results" / f"t{i}" / "status").read_text() == "failure\n"


def kill_the_batch_worker_midway(
    tmp_path: Path, executor: dict[str, object], results_class: str
) -> tuple[int, str]:
    """Run 4 tasks that finish and 2 held ones in one batch; once the held ones run (and,
    with Ray results, have shipped 2 log chunks), SIGKILL the Ray worker process running
    the batch and its runs (its process tree), then open the gate. Returns the exit code
    and stderr of ``saturn run``."""
    starts, gate, results = tmp_path / "starts", tmp_path / "gate", tmp_path / "results"
    worker = tmp_path / "worker-pid"
    tasks = counted_tasks(starts, gate, done=4, held=2, parent=worker)
    backend = {"class_spec": results_class, "directory": str(results)}
    path = write_sweep(tmp_path, tasks, executor=executor, results=backend, nprocs=2, batch_size=6)
    chunked = results_class == "Ray"
    with saturn_in_background("run", str(path), "-q", "--log-chunk-minutes", "0.01") as run:
        wait_for(
            lambda: (
                starts_of(starts).keys() >= {"h0", "h1"}
                and all((results / f"f{i}" / "status").exists() for i in range(4))
                and worker.exists()
                and (not chunked or min(chunks_of(results / "h0"), chunks_of(results / "h1")) > 1)
            ),
            timeout=120,
            what="4 finished tasks and 2 running",
        )
        batch_worker = int(worker.read_text())
        kill_tree(batch_worker)
        wait_for(lambda: not pid_alive(batch_worker), timeout=60, what="the worker's end")
        gate.touch()
        _, stderr = run.communicate(timeout=120)
    return run.returncode, stderr


@pytest.mark.parametrize("results_class", ["LocalDir", "Ray"])
def test_worker_killed_mid_batch_is_retried_without_finished_tasks(
    tmp_path, saturn, ray_address, results_class
):
    # Ray retries the batch (max_retries, default 3): the retry skips what finished and
    # runs the rest, without the log chunks the dead attempts shipped.
    returncode, stderr = kill_the_batch_worker_midway(
        tmp_path, ray_executor(ray_address), results_class
    )
    assert returncode == 0, stderr
    results = tmp_path / "results"
    assert starts_of(tmp_path / "starts") == {"f0": 1, "f1": 1, "f2": 1, "f3": 1, "h0": 2, "h1": 2}
    for task in [f"f{i}" for i in range(4)] + ["h0", "h1"]:
        assert (results / task / "status").read_text() == "success\n"
    for task in ("h0", "h1"):
        assert len(attempts_in((results / task / "log").read_text())) == 1
    status = saturn("status", "--name", "lr-sweep", "--json")
    assert '"succeeded": 6' in status.stdout, status.stdout


def test_max_retries_0_leaves_a_dead_workers_batch_unfinished(tmp_path, ray_address):
    executor = ray_executor(ray_address, max_retries=0)
    returncode, stderr = kill_the_batch_worker_midway(tmp_path, executor, "LocalDir")
    assert returncode == 1
    assert "batch 0: WorkerCrashedError" in stderr, stderr
    assert "2 tasks have no status" in stderr, stderr
    assert starts_of(tmp_path / "starts") == {"f0": 1, "f1": 1, "f2": 1, "f3": 1, "h0": 1, "h1": 1}


@contextlib.contextmanager
def actor_killed_midway(
    tmp_path: Path, address: str, results_class: str, *args: str
) -> Iterator[subprocess.Popen[str]]:
    """Start ``saturn run ARGS`` on 2 tasks that finish and 2 held ones, in one batch;
    once the held ones run, ray.kill the sweep's actor (Ray then ends the batch task it
    owns). Yields the ``saturn run`` process, maybe still running."""
    starts, gate, results = tmp_path / "starts", tmp_path / "gate", tmp_path / "results"
    tasks = counted_tasks(starts, gate, done=2, held=2)
    backend = {"class_spec": results_class, "directory": str(results)}
    executor = ray_executor(address)
    path = write_sweep(tmp_path, tasks, executor=executor, results=backend, nprocs=2, batch_size=4)
    with saturn_in_background("run", str(path), "-q", *args) as run:
        wait_for(
            lambda: (
                starts_of(starts).keys() >= {"h0", "h1"}
                and all((results / f"f{i}" / "status").exists() for i in range(2))
            ),
            timeout=120,
            what="2 finished tasks and 2 running",
        )
        ray.kill(ray.get_actor(actor_name(load_record("lr-sweep")), namespace=NAMESPACE))
        yield run


KILLED = "died: The actor is dead because it was killed by `ray.kill`."
LOST = "its 2 tasks without a status are lost: each now has status failure (exit 137)"


def assert_lost_with_the_actor(results: Path, saturn: Any) -> None:
    """f0 and f1 kept their success; h0 and h1 were lost with the actor, and say so."""
    for task in ("f0", "f1"):
        assert (results / task / "status").read_text() == "success\n"
    for task in ("h0", "h1"):
        assert (results / task / "status").read_text() == "failure\n"
        assert (results / task / "error").read_text() == "137\n"
        last = events_of(results / task)[-1]
        assert last["type"] == "terminated" and KILLED in last["error"], last
    status = json.loads(saturn("status", "--name", "lr-sweep", "--json").stdout)
    assert (status["succeeded"], status["failed"]) == (2, 2), status
    assert [r["status_code"] for r in status["failed_runs"]] == [137, 137], status
    collected = saturn("collect", "--name", "lr-sweep", "-q", timeout=120)
    assert collected.returncode == 1, collected.stderr
    assert "Traceback" not in collected.stderr, collected.stderr


@pytest.mark.parametrize("results_class", ["LocalDir", "Ray"])
def test_a_lost_actor_ends_the_run_naming_the_lost_tasks(
    tmp_path, saturn, ray_address, results_class
):
    with actor_killed_midway(tmp_path, ray_address, results_class) as run:
        _, stderr = run.communicate(timeout=120)
    assert run.returncode == 1, stderr
    assert "Traceback" not in stderr, stderr
    assert KILLED in stderr and LOST in stderr, stderr
    assert_lost_with_the_actor(tmp_path / "results", saturn)


@pytest.mark.parametrize("command", ["collect", "terminate"])
def test_a_detached_sweep_whose_actor_died(tmp_path, saturn, ray_address, command):
    with actor_killed_midway(tmp_path, ray_address, "LocalDir", "--detach") as run:
        _, stderr = run.communicate(timeout=60)
    assert run.returncode == 0, stderr
    results = tmp_path / "results"
    after = saturn(command, "--name", "lr-sweep", timeout=120)
    assert "Traceback" not in after.stderr, after.stderr
    assert KILLED in after.stderr and LOST in after.stderr, after.stderr
    if command == "collect":
        assert after.returncode == 1, after.stderr
    else:
        assert after.returncode == 0, after.stderr
        assert "2 tasks had not finished (2 were stopped or ended, 0 never started)" in (
            after.stdout
        )
    assert_lost_with_the_actor(results, saturn)


def test_a_batch_that_lost_the_actor_goes_on_and_records_its_runs(tmp_path, ray_address):
    # The batch task is the test's own (not the actor's): it outlives the actor, as one
    # would that Ray has not ended yet. It neither crashes nor stops its runs.
    starts, gate = tmp_path / "starts", tmp_path / "gate"
    name = f"saturn-lost-{tmp_path.name}"
    actor = SweepActor.options(name=name, namespace=NAMESPACE).remote()
    tasks = counted_tasks(starts, gate, done=1, held=1)
    runs = [Run(cmd=t["command"], remote_output_path=str(tmp_path / t["name"])) for t in tasks]
    batch = Batch(nprocs=2, remote_output_path=str(tmp_path), runs=runs, layout="sweep")
    job = WorkerJob(sweep="lost", stop=RayActor(name), grace=1)
    task = ray.remote(run_batches).options(num_cpus=1).remote(job, [msgspec.json.encode(batch)])
    wait_for(
        lambda: "h0" in starts_of(starts) and (tmp_path / "f0" / "status").exists(),
        timeout=120,
        what="f0 finished and h0 running",
    )
    ray.kill(actor)
    # Its stop signal asks the actor every second; once it has found it dead, it says so
    # in the worker's log (Ray's worker-*.err), or the batch ends (it crashed).
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    seen = f"saturn: {name} died; this batch's runs go on"
    wait_for(
        lambda: (
            any(seen in p.read_text(errors="replace") for p in logs.glob("worker-*.err"))
            or ray.wait([task], timeout=0)[0]
        ),
        timeout=60,
        what="the batch to see the actor dead",
    )
    gate.touch()
    summary = ray.get(task, timeout=120)
    assert (summary.succeeded, summary.failed) == (2, 0)
    for task_name in ("f0", "h0"):
        assert (tmp_path / task_name / "status").read_text() == "success\n"
