"""DaskExecutor: the batches running in one worker process share one watch of the sweep's
terminate Event (executors/shared_stop.py), on a real scheduler instrumented in-process
and a real worker process."""

from __future__ import annotations

import json
import time

from conftest import DaskCluster, saturn_in_background, wait_for
from sweeps import events_of, write_sweep


def test_running_batches_of_a_worker_ask_once_a_second_in_all(tmp_path, saturn):
    from distributed import LocalCluster

    asked: list[float] = []
    local = LocalCluster(
        n_workers=0, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address=":0"
    )
    with local:
        is_set = local.scheduler.handlers["event_is_set"]

        def counted(**kwargs):
            asked.append(time.monotonic())
            return is_set(**kwargs)

        local.scheduler.handlers["event_is_set"] = counted
        workers = DaskCluster(tmp_path / "dask")
        workers.directory.mkdir()
        workers.scheduler_file.write_text(json.dumps({"address": local.scheduler_address}))
        workers.address = local.scheduler_address
        try:
            workers.add_worker(slots=4)  # 4 threads: 4 batches at once, in one process
            workers.wait_for_workers(1)
            started = tmp_path / "started"
            started.mkdir()
            command = f"touch {started}/$$; exec sleep 300"
            tasks = [{"name": f"t{i}", "command": command} for i in range(4)]
            executor = {
                "class_spec": "DaskExecutor",
                "scheduler_address": local.scheduler_address,
                "slots_resource": "saturn_slots",
            }
            path = write_sweep(tmp_path, tasks, executor=executor, nprocs=1, batch_size=1)
            with saturn_in_background("run", str(path), "-q") as run:
                wait_for(lambda: len(list(started.iterdir())) == 4, timeout=60, what="4 runs")
                since = time.monotonic()
                wait_for(lambda: sum(t > since for t in asked) >= 4, timeout=60, what="4 polls")
                # One batch polls, sleeping 1 s between polls: 4 polls span 3 sleeps.
                # Four batches polling each would ask 4 times within about a second.
                assert time.monotonic() - since >= 2.9
                stopped = saturn("terminate", "--name", "lr-sweep", "--wait", "60", timeout=120)
                assert stopped.returncode == 0, stopped.stderr
                _, stderr = run.communicate(timeout=60)
            # Every batch stopped, also those that waited on the one that polled.
            assert run.returncode == 1, stderr
            for i in range(4):
                task = tmp_path / "results" / f"t{i}"
                assert task.joinpath("status").read_text() == "failure\n"
                assert "terminated" in [e["type"] for e in events_of(task)]
        finally:
            workers.stop()
