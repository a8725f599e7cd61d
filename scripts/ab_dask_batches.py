"""What a batch costs on DaskExecutor: ``saturn batch`` against ``saturn run`` sweeps of
the same runs cut into batches of each given size, alternating, on the Dask row's cluster.

    python scripts/ab_dask_batches.py [RUNS] [ROUNDS] [SIZE ...]    # SIZE: auto or N

``RUNS`` (5000) x ``true``; 2 worker processes x 4 threads, ``saturn_slots`` 4 each,
nprocs 2, as ``scripts/bench --only dask``. Per size: the median ratio to ``saturn
batch`` and, per round, the CPU seconds of the client (its wait4), of this process (the
scheduler) and of the worker processes (their own, and their reaped children's).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time

import bench
import psutil
from distributed import Client


def own_and_children(process: psutil.Process) -> tuple[float, float]:
    times = process.cpu_times()
    return times.user + times.system, times.children_user + times.children_system


def measured(cmd: list[str], workers: list[psutil.Process], env: dict[str, str]) -> list[float]:
    """Wall seconds, client CPU, scheduler CPU, workers' own CPU, workers' children CPU."""
    me = psutil.Process()
    before = [own_and_children(w) for w in workers]
    scheduler = sum(me.cpu_times()[:2])
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {cmd}")
    after = [own_and_children(w) for w in workers]
    return [
        wall,
        usage.ru_utime + usage.ru_stime,
        sum(me.cpu_times()[:2]) - scheduler,
        sum(a[0] - b[0] for a, b in zip(after, before, strict=True)),
        sum(a[1] - b[1] for a, b in zip(after, before, strict=True)),
    ]


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    sizes = sys.argv[3:] or ["auto", str(-(-runs // 8))]
    root = bench.scratch_root()
    job = bench.write_true_job(root / "true.json", runs, root / "sat")
    with bench.dask_row_cluster(root) as cluster:
        with Client(cluster) as client:
            workers = [psutil.Process(pid) for pid in client.run(os.getpid).values()]
        executor = {
            "class_spec": "DaskExecutor",
            "scheduler_address": cluster.scheduler_address,
            "slots_resource": "saturn_slots",
        }
        sweeps = {
            size: bench.write_sweep(
                root / f"sizes-{size}.json",
                ["true"] * runs,
                root / "out",
                executor=executor,
                nprocs=2,
                batch_size=size if size == "auto" else int(size),
            )
            for size in sizes
        }
        env = {**os.environ, "XDG_DATA_HOME": str(root / "state")}
        results: dict[str, list[list[float]]] = {"batch": [], **{size: [] for size in sizes}}
        for _ in range(rounds):
            shutil.rmtree(root / "sat", ignore_errors=True)
            results["batch"].append(measured([*bench.SATURN, "batch", str(job), "-q"], [], env))
            for size, sweep in sweeps.items():
                shutil.rmtree(root / "out", ignore_errors=True)
                cmd = [*bench.SATURN, "run", str(sweep), "-q", "--replace"]
                results[size].append(measured(cmd, workers, env))
    shutil.rmtree(root, ignore_errors=True)
    baseline = statistics.median(r[0] for r in results["batch"])
    print("size | ratio to saturn batch | per round: wall, client, scheduler, workers, children")
    for size, rows in results.items():
        ratio = baseline / statistics.median(r[0] for r in rows)
        cells = "; ".join(", ".join(f"{x:.2f}" for x in row) for row in rows)
        print(f"{size} | {ratio:.3f}x | {cells}")


if __name__ == "__main__":
    main()
