"""``saturn run / collect / terminate`` through DaskExecutor on real scheduler and workers."""

from __future__ import annotations

import signal

import anyio
import pytest

from conftest import pid_alive, saturn_in_background, saturn_without, wait_for
from saturn_async.storage.s3 import S3Storage
from sweeps import (
    SEED_TASKS,
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


def s3_put(objects: dict[str, bytes]) -> None:
    async def main() -> None:
        async with S3Storage() as storage:
            for location, data in objects.items():
                await storage.put(location, data)

    anyio.run(main)


def s3_has(locations: list[str]) -> bool:
    async def main() -> bool:
        async with S3Storage() as storage:
            return all([await storage.get(location) is not None for location in locations])

    return anyio.run(main)


def dask_executor(address: str, **fields: object) -> dict[str, object]:
    return {"class_spec": "DaskExecutor", "scheduler_address": address, **fields}


@pytest.mark.parametrize("results_class", ["LocalDir", "Dask"])
def test_seed_run_yaml_end_to_end(tmp_path, saturn, dask_cluster, results_class):
    results = {"class_spec": results_class, "directory": str(tmp_path / "results")}
    path = write_sweep(
        tmp_path, executor=dask_executor(dask_cluster.address), results=results, nprocs=2
    )
    done = saturn("run", str(path), "-q", "--log-chunk-minutes", "0.02")
    assert done.returncode == 1, done.stderr
    assert_seed_outputs(tmp_path / "results")


@pytest.mark.parametrize(
    "executor",
    [
        {"class_spec": "LocalExecutor"},
        {"class_spec": "MultiprocessingExecutor", "processes": 2},
        {"class_spec": "FuturesExecutor", "kwargs": {"max_workers": 2}},
    ],
    ids=lambda e: e["class_spec"],
)
def test_dask_results_with_every_executor(tmp_path, saturn, dask_cluster, executor):
    results = {
        "class_spec": "Dask",
        "directory": str(tmp_path / "results"),
        "scheduler_address": dask_cluster.address,
    }
    path = write_sweep(tmp_path, executor=executor, results=results, nprocs=2)
    done = saturn("run", str(path), "-q", "--log-chunk-minutes", "0.02")
    assert done.returncode == 1, done.stderr
    assert_seed_outputs(tmp_path / "results")
    again = saturn("collect", "--name", "lr-sweep", "-q")
    assert again.returncode == 1, again.stderr  # lr-0.7 failed; nothing else to gather


def test_scheduler_address_from_environment(tmp_path, saturn, dask_cluster, monkeypatch):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", dask_cluster.address)
    path = write_sweep(tmp_path, [{"command": "true"}] * 1, executor={"class_spec": "DaskExecutor"})
    done = saturn("run", str(path), "-q")
    assert done.returncode == 0, done.stderr


def test_slots_resource_runs_small_batches_side_by_side(tmp_path, saturn, dask_cluster):
    # Workers have saturn_slots=2; batches of one task ask for 1 slot each, so the 4
    # tasks (each waiting for all 4 to have started) can only finish if 4 run at once.
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    command = f"touch {barrier}/$$; while [ $(ls {barrier} | wc -l) -lt 4 ]; do sleep 0.05; done"
    tasks = [{"name": f"t{i}", "command": command, "timeout": 60} for i in range(4)]
    executor = dask_executor(dask_cluster.address, slots_resource="saturn_slots")
    path = write_sweep(tmp_path, tasks, executor=executor, nprocs=1, batch_size=1)
    done = saturn("run", str(path), "-q", timeout=90)
    assert done.returncode == 0, done.stderr


def test_slots_resource_caps_the_runs_of_a_worker(tmp_path, saturn, dask_cluster):
    # Workers have 2 threads and saturn_slots=2: two batches of nprocs 2 run side by
    # side on a worker (in its one batch loop) but share its 2 slots, so at most 4 runs
    # are going at once on the 2 workers (8 if each batch had its own slots).
    running = tmp_path / "running"
    running.mkdir()
    seen = tmp_path / "seen"
    command = f"mkdir {running}/$$; ls {running} | wc -l >> {seen}; sleep 0.3; rmdir {running}/$$"
    tasks = [{"name": f"t{i}", "command": command} for i in range(16)]
    executor = dask_executor(dask_cluster.address, slots_resource="saturn_slots")
    path = write_sweep(tmp_path, tasks, executor=executor, nprocs=2, batch_size=2)
    done = saturn("run", str(path), "-q", timeout=120)
    assert done.returncode == 0, done.stderr
    counts = [int(line) for line in seen.read_text().split()]
    assert len(counts) == 16
    assert max(counts) <= 4, counts


def test_unreachable_scheduler_is_one_line(tmp_path, saturn):
    path = write_sweep(tmp_path, executor=dask_executor("tcp://127.0.0.1:9"))
    done = saturn("run", str(path), "-q")
    assert done.returncode == 2
    assert (
        "$.executor.scheduler_address: cannot reach the Dask scheduler at tcp://127.0.0.1:9"
        in done.stderr
    )
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize("results_class", ["LocalDir", "Dask"])
def test_ctrl_c_detaches_and_collect_gets_everything(tmp_path, saturn, dask_cluster, results_class):
    gate = tmp_path / "gate"
    results = {"class_spec": results_class, "directory": str(tmp_path / "results")}
    path = write_sweep(
        tmp_path,
        gated_tasks(gate),
        executor=dask_executor(dask_cluster.address),
        results=results,
        nprocs=2,
    )
    # A task has started on a worker once its first log chunk reached the client.
    detach_then_collect(
        saturn, tmp_path / "results", gate, str(path), "-q", "--log-chunk-minutes", "0.02"
    )
    for i in range(4):
        task = tmp_path / "results" / f"t{i}"
        assert task.joinpath("status").read_text() == "success\n"
        assert task.joinpath("log").read_text().endswith(f"done {i}\n")


@pytest.mark.parametrize("results_class", ["LocalDir", "Dask"])
def test_terminate_leaves_no_process_on_workers(tmp_path, saturn, dask_cluster, results_class):
    # 2 workers x 2 slots run 4 tasks; 4 more wait in queued batches.
    tasks = [{"name": f"t{i}", "command": "echo started $$; exec sleep 300"} for i in range(8)]
    results = {"class_spec": results_class, "directory": str(tmp_path / "results")}
    executor = dask_executor(dask_cluster.address, slots_resource="saturn_slots")
    path = write_sweep(tmp_path, tasks, executor=executor, results=results, nprocs=2, batch_size=2)
    done = saturn("run", str(path), "-q", "--detach", "--log-chunk-minutes", "0.02")
    assert done.returncode == 0, done.stderr

    def running_pids() -> list[int]:
        pids = []
        for log in (tmp_path / "results").glob("*/log*"):
            text = b"".join(
                p.read_bytes() for p in ([log] if log.is_file() else sorted(log.iterdir()))
            )
            if text.startswith(b"started"):
                pids.append(int(text.split()[1]))
        return pids if len(pids) == 4 else []

    # collect drains Dask results into the directory meanwhile; Ctrl-C detaches it.
    with saturn_in_background("collect", "--name", "lr-sweep", "-q") as collect:
        pids = wait_for(running_pids, timeout=60, what="4 running tasks")
        collect.send_signal(signal.SIGINT)
        collect.communicate(timeout=30)
    stopped = saturn("terminate", "--name", "lr-sweep", "--wait", "60", timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(pid_alive(pid) for pid in pids)
    for i in range(8):
        task = tmp_path / "results" / f"t{i}"
        assert task.joinpath("status").read_text() == "failure\n"
        assert "terminated" in [e["type"] for e in events_of(task)]
    status = saturn("status", "--name", "lr-sweep", "--json")
    assert '"failed": 8' in status.stdout


@pytest.mark.parametrize("results_class", ["LocalDir", "Dask"])
def test_worker_tree_killed_mid_batch_reruns_only_unfinished_tasks(
    tmp_path, saturn, own_dask_cluster, results_class
):
    # The whole tree (nanny, worker, its runs) dies as in a machine crash; Dask runs the
    # batch again on the new worker, which must skip what finished and run the rest,
    # without the log chunks the dead attempts shipped (the queue carries chunks).
    cluster = own_dask_cluster
    victim = cluster.add_worker(slots=2, nanny=True)
    cluster.wait_for_workers(1)
    starts, gate, results = tmp_path / "starts", tmp_path / "gate", tmp_path / "results"
    tasks = counted_tasks(starts, gate, done=4, held=2)
    backend = {"class_spec": results_class, "directory": str(results)}
    executor = dask_executor(cluster.address)
    path = write_sweep(tmp_path, tasks, executor=executor, results=backend, nprocs=2, batch_size=6)
    chunked = results_class == "Dask"
    with saturn_in_background("run", str(path), "-q", "--log-chunk-minutes", "0.01") as run:
        wait_for(
            lambda: (
                starts_of(starts).keys() >= {"h0", "h1"}
                and all((results / f"f{i}" / "status").exists() for i in range(4))
                and (not chunked or min(chunks_of(results / "h0"), chunks_of(results / "h1")) > 1)
            ),
            timeout=120,
            what="4 finished tasks and 2 running",
        )
        kill_tree(victim.pid)
        victim.wait()
        gate.touch()
        cluster.add_worker(slots=2)
        _, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr
    assert starts_of(starts) == {"f0": 1, "f1": 1, "f2": 1, "f3": 1, "h0": 2, "h1": 2}
    for task in [f"f{i}" for i in range(4)] + ["h0", "h1"]:
        assert (results / task / "status").read_text() == "success\n"
    for task in ("h0", "h1"):
        assert len(attempts_in((results / task / "log").read_text())) == 1
    status = saturn("status", "--name", "lr-sweep", "--json")
    assert '"succeeded": 6' in status.stdout, status.stdout


def test_scheduler_lost_while_following_is_reported_without_a_traceback(tmp_path, own_dask_cluster):
    # The client's futures are cancelled when its scheduler goes: following must say
    # so and end, as it did when it polled (not raise out of its wait between polls).
    cluster = own_dask_cluster
    cluster.add_worker(slots=2)
    cluster.wait_for_workers(1)
    starts, gate, results = tmp_path / "starts", tmp_path / "gate", tmp_path / "results"
    backend = {"class_spec": "LocalDir", "directory": str(results)}
    tasks = counted_tasks(starts, gate, done=0, held=2)
    executor = dask_executor(cluster.address)
    path = write_sweep(tmp_path, tasks, executor=executor, results=backend, nprocs=1, batch_size=1)
    with saturn_in_background("run", str(path), "-q") as run:
        wait_for(lambda: starts_of(starts).keys() >= {"h0", "h1"}, timeout=120, what="2 starts")
        cluster.scheduler.kill()
        cluster.scheduler.wait()
        _, stderr = run.communicate(timeout=120)
    gate.touch()
    assert run.returncode == 1, stderr
    saturn_lines = [line for line in stderr.splitlines() if line.startswith("saturn: ")]
    assert "/saturn_async/" not in stderr, stderr  # distributed logs its own tracebacks
    assert any(line.endswith(": cancelled") for line in saturn_lines), stderr
    assert any("2 tasks have no status" in line for line in saturn_lines), stderr


def test_seed_tasks_have_names():
    assert [t["name"] for t in SEED_TASKS] == ["lr-0.5", "lr-0.6", "lr-0.8", "lr-0.7"]


def test_cluster_class_when_no_scheduler_is_given(tmp_path, saturn):
    # No address anywhere: DaskExecutor makes its own cluster, which ends with `run`.
    executor = {
        "class_spec": "DaskExecutor",
        "cluster_kwargs": {
            "n_workers": 1,
            "threads_per_worker": 2,
            "processes": False,
            "dashboard_address": None,
        },
    }
    path = write_sweep(tmp_path, executor=executor, nprocs=2)
    done = saturn("run", str(path), "-q", "--detach")
    assert done.returncode == 2
    assert "DaskExecutor cannot detach" in done.stderr
    done = saturn("run", str(path), "-q")
    assert done.returncode == 1, done.stderr
    assert_seed_outputs(tmp_path / "results")


@pytest.mark.parametrize("results_class", ["LocalDir", "Dask"])
def test_dask_without_the_extra_names_it(tmp_path, results_class):
    results = {"class_spec": results_class, "directory": str(tmp_path / "r")}
    path = write_sweep(tmp_path, executor=dask_executor("tcp://127.0.0.1:9"), results=results)
    result = saturn_without("distributed", "run", str(path), "-q")
    assert result.returncode == 2
    assert (
        result.stderr
        == "saturn: error: DaskExecutor needs the extra: pip install 'saturn_async[dask]'\n"
    )


def test_s3_results_written_by_dask_workers(tmp_path, saturn, s3, own_dask_cluster):
    # Workers started now inherit the S3 endpoint and credentials of the s3 fixture.
    own_dask_cluster.add_worker(slots=2)
    own_dask_cluster.wait_for_workers(1)
    results = {"class_spec": "S3", "url": f"{s3}/sweep"}
    path = write_sweep(
        tmp_path, executor=dask_executor(own_dask_cluster.address), results=results, nprocs=2
    )
    done = saturn("run", str(path), "-q", "--log-chunk-minutes", "0.02", timeout=120)
    assert done.returncode == 1, done.stderr
    log = saturn("logs", f"{s3}/sweep/lr-0.7")
    assert log.stdout == "diverged\n"
    status = saturn("status", "--name", "lr-sweep", "--json")
    assert '"succeeded": 3' in status.stdout and '"failed": 1' in status.stdout


def test_worker_tree_killed_with_s3_results_reruns_only_this_sweeps_unfinished(
    tmp_path, saturn, s3, own_dask_cluster
):
    # An earlier sweep of the name left outcomes of h0 and h1 on S3 (S3 keeps them until
    # replaced): the rerun must not take them for this sweep's and skip h0 and h1.
    root = f"{s3}/sweep"
    stale = b'events:\n- {"type":"submitted","utctimestamp":"2020-01-01T00:00:00+00:00"}\n'
    s3_put({f"{root}/h{i}/{name}": data for i in range(2) for name, data in
            (("events", stale), ("status", b"success\n"))})  # fmt: skip
    cluster = own_dask_cluster
    victim = cluster.add_worker(slots=2, nanny=True)  # inherits the S3 variables
    cluster.wait_for_workers(1)
    starts, gate = tmp_path / "starts", tmp_path / "gate"
    tasks = counted_tasks(starts, gate, done=4, held=2)
    results = {"class_spec": "S3", "url": root}
    executor = dask_executor(cluster.address)
    path = write_sweep(tmp_path, tasks, executor=executor, results=results, nprocs=2, batch_size=6)
    with saturn_in_background("run", str(path), "-q", "--log-chunk-minutes", "0.01") as run:
        wait_for(
            lambda: (
                starts_of(starts).keys() >= {"h0", "h1"}
                and s3_has([f"{root}/f{i}/status" for i in range(4)])
                and s3_has([f"{root}/h{i}/log/000001" for i in range(2)])
            ),
            timeout=120,
            what="4 finished tasks and 2 running",
        )
        kill_tree(victim.pid)
        victim.wait()
        gate.touch()
        cluster.add_worker(slots=2)
        _, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr
    assert starts_of(starts) == {"f0": 1, "f1": 1, "f2": 1, "f3": 1, "h0": 2, "h1": 2}
    for task in ("h0", "h1"):
        assert len(attempts_in(saturn("logs", f"{root}/{task}").stdout)) == 1
    status = saturn("status", "--name", "lr-sweep", "--json")
    assert '"succeeded": 6' in status.stdout, status.stdout
