"""Benchmarks of how the client learns outcomes (``scripts/bench --only progress``).

``saturn status --name`` of a finished sweep, read from its supervisors' summaries (the
ledger segments under the results root), against the same sweep read task by task (its
summaries removed: what every poll did before); and a sweep of a million tasks through
DaskExecutor, run once end to end, with the peak RSS of the client and the scheduler.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import anyio

from saturn_async.storage.layout import LAYOUTS, Event
from saturn_async.storage.ledger import LEDGER, LedgerWriter
from saturn_async.storage.local import LocalStorage, write_atomically
from saturn_async.sweep import state

Row = tuple[str, str, str, str]
SEGMENT_RUNS = 4000
"""Runs per synthetic ledger segment (a supervisor's flush)."""
FAILED_EVERY = 100
"""One task in this many failed (exit 1), with its files written."""


def finished_sweep(root: Path, name: str, tasks: int, *, every_task_dir: bool) -> Path:
    """A finished sweep of ``tasks`` tasks, as its supervisors leave it: the record in the
    state store (``$XDG_DATA_HOME`` must point into ``root``), the ledger segments under
    the results root, and each task's files (every task's, or only the failed ones')."""
    results = root / f"{name}-results"
    created = "2026-01-01T00:00:00+00:00"
    locations = [f"{results}/t{i:07d}" for i in range(tasks)]
    record = state.SweepRecord(
        name=name, created=created, source=str(root / "run.json"), executor={}, results={},
        results_root=str(results), tasks=locations, batches=1, client_pid=0, client_started=0,
    )  # fmt: skip
    state.create(record, [], replace=True)
    layout = LAYOUTS["sweep"]
    for i, location in enumerate(locations):
        code = 1 if i % FAILED_EVERY == 0 else 0
        if code or every_task_dir:
            os.makedirs(location)
            events = [Event(type="submitted", utctimestamp=created, cmd=f"task {i}")]
            for file, data in layout.final_writes(events, code):
                if data is not None:
                    write_atomically(f"{location}/{file}", data)

    async def write_ledger() -> None:
        ledger = LedgerWriter(LocalStorage(), created)
        for i, location in enumerate(locations):
            ledger.record(str(results), location, 1 if i % FAILED_EVERY == 0 else 0)
            if (i + 1) % SEGMENT_RUNS == 0:
                await ledger.flush()
        await ledger.flush()

    anyio.run(write_ledger)
    return results


def timed_cpu(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (KiB) of one command: on a
    shared machine the CPU time says what the wall time cannot."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark command failed: {cmd}")
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def status_speed(root: Path, tasks: int, small: int, saturn: list[str]) -> list[Row]:
    """``status --name``: ``tasks`` from summaries, and ``small`` task by task."""
    env = {**os.environ, "XDG_DATA_HOME": str(root / "status-state")}
    os.environ["XDG_DATA_HOME"] = env["XDG_DATA_HOME"]
    try:
        big = finished_sweep(root, "status-big", tasks, every_task_dir=False)
        wall, cpu, rss = timed_cpu([*saturn, "status", "--name", "status-big"], env=env)
        shutil.rmtree(big)
        few = finished_sweep(root, "status-small", small, every_task_dir=True)
        shutil.rmtree(few / LEDGER)
        per_task, per_task_cpu, _ = timed_cpu([*saturn, "status", "--name", "status-small"], env)
        shutil.rmtree(few)
    finally:
        del os.environ["XDG_DATA_HOME"]
    scale = tasks / small
    return [
        (f"`saturn status --name`, finished {tasks:,}-task sweep, from its summaries",
         f"{wall:.2f} s ({cpu:.2f} s CPU), {rss / 1024:.0f} MB", f"{wall:.2f} s", "<= 2 s"),
        (f"  the same read task by task (summaries removed), {small:,} tasks",
         f"{per_task:.2f} s ({per_task_cpu:.2f} s CPU)", f"~{per_task * scale:.0f} s at {tasks:,}",
         "(reported)"),
    ]  # fmt: skip


def peak_rss_of(pid: int, stop: threading.Event, peaks: dict[int, int]) -> None:
    """Sample the RSS (KiB) of ``pid`` every 0.2 s into ``peaks`` until ``stop``."""
    while not stop.wait(0.2):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        peaks[pid] = max(peaks.get(pid, 0), int(line.split()[1]))
        except OSError:
            return


def dask_million(root: Path, tasks: int, saturn: list[str]) -> list[Row]:
    """``tasks`` x ``true`` through DaskExecutor on 2 local workers (nprocs 2 each), run
    once: wall time, and the peak RSS of the client (``saturn run``) and the scheduler
    (its own process, ``dask scheduler``)."""
    env = {**os.environ, "XDG_DATA_HOME": str(root / "million-state")}
    # On disk: a million task directories of small files would take ~16 GB of tmpfs.
    results = Path(tempfile.mkdtemp(prefix="saturn-million-", dir="/var/tmp"))
    sched_file = root / "scheduler.json"
    module = [sys.executable, "-m"]
    scheduler = [*module, "distributed.cli.dask_scheduler", "--scheduler-file", str(sched_file)]
    scheduler += ["--no-dashboard", "--port", "0"]
    procs = [subprocess.Popen(scheduler, stderr=subprocess.DEVNULL)]
    try:
        while not sched_file.exists():
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        worker = [*module, "distributed.cli.dask_worker", address, "--nthreads", "4"]
        worker += ["--no-dashboard", "--resources", "saturn_slots=2"]
        worker += ["--local-directory", str(root / "dask-workers")]
        for _ in range(2):
            procs.append(subprocess.Popen(worker, stderr=subprocess.DEVNULL))
        sweep = root / "million.json"
        doc = {
            "name": "million",
            "tasks": [{"name": f"t{i:07d}", "command": "true"} for i in range(tasks)],
            "results": {"class_spec": "LocalDir", "directory": str(results)},
            "executor": {"class_spec": "DaskExecutor", "scheduler_address": address,
                         "slots_resource": "saturn_slots"},
            "nprocs": 2,
        }  # fmt: skip
        sweep.write_text(json.dumps(doc))
        del doc
        stop = threading.Event()
        peaks: dict[int, int] = {}
        start = time.perf_counter()
        client = subprocess.Popen([*saturn, "run", str(sweep), "-q"], env=env)
        watchers = [
            threading.Thread(target=peak_rss_of, args=(pid, stop, peaks))
            for pid in (client.pid, procs[0].pid)
        ]
        for watcher in watchers:
            watcher.start()
        code = client.wait()
        wall = time.perf_counter() - start
        stop.set()
        for watcher in watchers:
            watcher.join()
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait()
        shutil.rmtree(results, ignore_errors=True)
    client_mb, scheduler_mb = peaks.get(client.pid, 0) / 1024, peaks.get(procs[0].pid, 0) / 1024
    verdict = "completes" if code == 0 else f"exit {code}"
    return [
        (f"{tasks:,} x `true` via DaskExecutor, 2 workers x nprocs 2, run once",
         f"{wall:.0f} s ({tasks / wall:.0f} runs/s), {verdict}", f"{code} exit", "<= 0 exit"),
        ("  client (saturn run) peak RSS", f"{client_mb:.0f} MB", f"{client_mb:.0f} MB",
         "<= 500 MB"),
        ("  scheduler peak RSS", f"{scheduler_mb:.0f} MB", f"{scheduler_mb:.0f} MB", "<= 300 MB"),
    ]  # fmt: skip
