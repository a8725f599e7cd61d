"""Benchmarks, each side by side with its baseline in the same run.

Run through ``scripts/bench``; ``--help`` lists the knobs. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import itertools
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import bench_progress

import saturn_async
from saturn_async.daemon import protocol
from saturn_async.daemon.client import request
from saturn_async.exceptions import DaemonError, InputError
from saturn_async.logs.reader import copy_log
from saturn_async.spec import load_batch_file
from saturn_async.spec.yaml_loader import load_yaml_pyyaml
from saturn_async.storage.s3 import S3Storage
from saturn_async.storage.transfer import upload_directory
from saturn_async.supervisor import Supervisor

SATURN = [sys.executable, "-m", "saturn_async"]
ROWS: list[tuple[str, str, str, str]] = []
_NUMBER = re.compile(r"([<>]=)?\s*([+-]?\d+(?:\.\d+)?)(?:\s*(x|MB|MiB|s|requests)\b)?")


def compile_saturn() -> None:
    """Bytecode for saturn's modules, as an installed package has it: where
    PYTHONDONTWRITEBYTECODE is set, an editable install compiles its ~70 modules at
    every command's start (~50 ms), which no installed saturn does."""
    compileall.compile_dir(Path(saturn_async.__file__).parent, quiet=1)


def scratch_root() -> Path:
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return Path(tempfile.mkdtemp(prefix="saturn-bench-", dir=base))


def filesystem(path: Path) -> str:
    out = subprocess.run(
        ["df", "--output=fstype", str(path)], capture_output=True, text=True, check=False
    )
    return out.stdout.split()[-1] if out.returncode == 0 else "unknown"


def timed(cmd: list[str] | str, **kwargs: object) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one command, measured with wait4."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, shell=isinstance(cmd, str), stdout=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark command failed: {cmd}")
    return elapsed, usage.ru_maxrss


def write_true_job(path: Path, runs: int, output: Path) -> Path:
    """A batch file of ``runs`` runs of ``true``, nprocs 4, output under ``output``."""
    doc = {"nprocs": 4, "remote_output_path": str(output), "runs": [{"cmd": "true"}] * runs}
    path.write_text(json.dumps(doc))
    return path


def throughput(root: Path, runs: int, repeats: int) -> None:
    job = write_true_job(root / "true.json", runs, root / "sat")
    results: dict[str, list[float]] = {"saturn": [], "xargs": [], "parallel": []}
    for _ in range(repeats):
        shutil.rmtree(root / "sat", ignore_errors=True)
        results["saturn"].append(timed([*SATURN, "batch", str(job), "-q"])[0])
        shutil.rmtree(root / "sat", ignore_errors=True)
        xdir = root / "xargs"
        shutil.rmtree(xdir, ignore_errors=True)
        xdir.mkdir()
        for i in range(runs):
            (xdir / str(i)).mkdir()
        results["xargs"].append(
            timed(
                f"seq 0 {runs - 1} | xargs -P4 -I{{}} "
                f"sh -c 'true >{xdir}/{{}}/stdout 2>{xdir}/{{}}/stderr'"
            )[0]
        )
        shutil.rmtree(xdir)
        pdir = root / "parallel"
        results["parallel"].append(
            timed(f"seq 0 {runs - 1} | parallel -j4 --results {pdir} true")[0]
        )
        shutil.rmtree(pdir)
    rate = {k: runs / statistics.median(v) for k, v in results.items()}
    fs = filesystem(root)
    ROWS.append(
        (f"{runs} x `true`, nprocs 4 ({fs}): saturn batch", f"{rate['saturn']:.0f} runs/s", "", "")
    )
    ROWS.append(
        (
            "  xargs -P4 with redirects",
            f"{rate['xargs']:.0f} runs/s",
            f"{rate['saturn'] / rate['xargs']:.2f}x",
            ">= 0.75x",
        )
    )
    ROWS.append(
        (
            "  GNU parallel -j4 --results",
            f"{rate['parallel']:.0f} runs/s",
            f"{rate['saturn'] / rate['parallel']:.2f}x",
            ">= 3x",
        )
    )


def write_json_list(path: Path, head: dict[str, Any], key: str, items: Iterator[Any]) -> None:
    """``head`` with ``key`` set to the list of ``items``, written 10,000 at a time: this
    process never holds the file. A child's peak RSS (``ru_maxrss``) starts at this
    process's own peak on Linux (fork copies it), so that has to stay small."""
    with path.open("w") as file:
        file.write(json.dumps(head)[:-1] + f', "{key}": [')
        for start in itertools.count(0, 10_000):
            chunk = list(itertools.islice(items, 10_000))
            if not chunk:
                break
            file.write(("," if start else "") + json.dumps(chunk)[1:-1])
        file.write("]}")


DECODE = (
    "import sys, msgspec; from saturn_async.spec import Batch; "
    "from saturn_async.spec.sweep import Sweep; "
    "msgspec.json.decode(open(sys.argv[1], 'rb').read(), type={'job': Batch, 'sweep': Sweep}"
    "[sys.argv[2]])"
)
"""msgspec's decode of a job or sweep file alone, in a process of its own: the floor."""


def planning_rows(
    what: str, command: list[str], decode: list[str], limits: tuple[float, float], args: Any
) -> None:
    """Rows for ``command``: the median wall time and the peak RSS of ``args.repeats``
    rounds against absolute ``limits`` (seconds, MB), and beside them, in the same
    rounds, msgspec's decode of the same file and (``--old-src``) the old tree's run."""
    rounds: dict[str, list[tuple[float, int]]] = {"new": [], "decode": [], "old": []}
    old_env = {**os.environ, "PYTHONPATH": args.old_src or ""}
    for round_ in range(args.repeats):
        sides = ["new", "old"] if round_ % 2 == 0 else ["old", "new"]
        for side in sides if args.old_src else ["new"]:
            rounds[side].append(timed(command, env=old_env if side == "old" else None))
        rounds["decode"].append(timed(decode))
    seconds, megabytes = limits
    wall, low, peak = _summary(rounds["new"])
    ROWS.append((what, f"{wall:.2f} s (min {low:.2f}; {args.repeats} rounds)",
                 f"{wall / seconds:.2f} of {seconds:g} s", "<= 1"))  # fmt: skip
    ROWS.append(("  its peak RSS (largest of the rounds)", f"{peak:.0f} MB",
                 f"{peak / megabytes:.2f} of {megabytes:g} MB", "<= 1"))  # fmt: skip
    for side, name in (("decode", "msgspec's decode of the file alone"), ("old", "--old-src")):
        if rounds[side]:
            base, base_low, base_peak = _summary(rounds[side])
            ROWS.append((f"  {name}", f"{base:.2f} s (min {base_low:.2f}), {base_peak:.0f} MB",
                         f"{wall / base:.2f}x its time", ""))  # fmt: skip


def _summary(rounds: list[tuple[float, int]]) -> tuple[float, float, float]:
    """Median and least wall seconds, and the largest peak RSS in MB."""
    walls = [wall for wall, _ in rounds]
    return statistics.median(walls), min(walls), max(rss for _, rss in rounds) / 1024


def split_speed(root: Path, args: Any) -> None:
    json_runs, yaml_runs = args.split_runs, args.yaml_runs
    recipe = root / "recipe.yaml"
    recipe.write_text("spec:\n  command: x\n")
    job = root / "big.json"
    head = {"nprocs": 4, "remote_output_path": str(root / "o")}
    cmds = (
        f"python train.py --lr {i} --seed {i % 17} --shard s3://b/{i:07d}" for i in range(json_runs)
    )
    write_json_list(job, head, "runs", ({"cmd": cmd} for cmd in cmds))
    size = str(max(1, json_runs // 1000))
    split = [*SATURN, "split", str(recipe), str(job), str(root / "c1"), "--batch-size", size]
    decode = [sys.executable, "-c", DECODE, str(job), "job"]
    planning_rows(f"split {json_runs:,}-run JSON into 1,000 files", split, decode, (2, 500), args)
    job.unlink()
    shutil.rmtree(root / "c1")
    lines = ["nprocs: 4", f"remote_output_path: {root / 'o'}", "runs:"]
    lines += [f"- cmd: python train.py --lr {i} --seed {i % 17}" for i in range(yaml_runs)]
    yjob = root / "big.yaml"
    yjob.write_text("\n".join(lines) + "\n")
    wall, _ = timed([*SATURN, "split", str(recipe), str(yjob), str(root / "c2")])
    start = time.perf_counter()
    load_yaml_pyyaml(yjob.read_text(), str(yjob))
    fallback = time.perf_counter() - start
    ROWS.append(
        (
            f"split {yaml_runs:,}-run YAML (fastyaml-rs)",
            f"{wall:.2f} s",
            f"{wall / 1.5:.2f} of 1.5 s",
            "<= 1",
        )
    )
    ROWS.append(
        (
            "  PyYAML C loader alone (the fallback)",
            f"{fallback:.2f} s",
            f"{wall / fallback:.2f}x of it",
            "",
        )
    )


def dry_run_speed(root: Path, args: Any) -> None:
    """Planning a sweep of ``--split-runs`` tasks: ``saturn run --dry-run > /dev/null``."""
    size = str(max(1, args.split_runs // 1000))
    sweep = root / "big-sweep.json"
    head = {
        "name": "plan",
        "executor": {"class_spec": "LocalExecutor"},
        "results": {"class_spec": "LocalDir", "directory": str(root / "r")},
        "batch_size": int(size),
    }
    tasks = (
        {"name": f"t{i:07d}", "command": f"python train.py --lr {i}"}
        for i in range(args.split_runs)
    )
    write_json_list(sweep, head, "tasks", tasks)
    dry_run = [*SATURN, "run", str(sweep), "--dry-run"]  # stdout: /dev/null
    decode = [sys.executable, "-c", DECODE, str(sweep), "sweep"]
    what = f"run --dry-run of a {args.split_runs:,}-task JSON sweep (LocalExecutor, {size} a batch)"
    planning_rows(what, dry_run, decode, (3, 400), args)
    sweep.unlink()


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def memory_flatness(root: Path, runs: int) -> None:
    job = write_true_job(root / "mem.json", runs, root / "mem")
    batch = load_batch_file(job)
    checkpoint = runs // 10
    samples: dict[str, int] = {}

    async def main() -> None:
        supervisor = Supervisor(4)

        async def sample() -> None:
            while supervisor.progress.finished < checkpoint:  # noqa: ASYNC110 (a sampler)
                await anyio.sleep(0.05)
            samples["early"] = rss_kib()

        async with anyio.create_task_group() as tg:
            tg.start_soon(sample)
            await supervisor.run([batch])
        samples["end"] = rss_kib()

    anyio.run(main)
    growth = (samples["end"] - samples["early"]) / 1024
    ROWS.append(
        (
            f"supervisor RSS after {checkpoint:,} and {runs:,} runs",
            f"{samples['early'] / 1024:.0f} MB -> {samples['end'] / 1024:.0f} MB",
            f"+{growth:.1f} MB",
            "<= +20 MB",
        )
    )
    shutil.rmtree(root / "mem")


def start_moto(root: Path) -> subprocess.Popen[bytes]:
    """A moto_server on a free port; the AWS variables of this process point at it."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (root / "moto.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("moto_server did not start") from None
            time.sleep(0.1)
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_REGION="us-east-1",
    )
    empty_moto()
    return proc


def empty_moto() -> None:
    """Reset moto to one empty bucket, ``bench``: it slows as it holds more."""
    import urllib.request

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    for url, method in ((f"{endpoint}/moto-api/reset", "POST"), (f"{endpoint}/bench", "PUT")):
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=30):
            pass


def s3_upload(root: Path, repeats: int) -> None:
    tree = root / "results"
    tree.mkdir()
    for i in range(200):
        (tree / f"part-{i:03d}.bin").write_bytes(os.urandom(2**20))
    with (tree / "big.bin").open("wb") as f:
        for _ in range(200):
            f.write(os.urandom(2**20))

    async def ours(prefix: str) -> None:
        async with S3Storage() as storage:
            await upload_directory(storage, str(tree), prefix)

    # Interleaved rounds, medians, each side first in every other round, and moto emptied
    # before each upload: it slows as it holds more (3.2 GB after four rounds), which
    # swamped the difference between the two sides.
    aws = str(Path(sys.executable).with_name("aws"))
    times: dict[str, list[float]] = {"saturn": [], "aws": []}

    def saturn_round(round_: int) -> None:
        empty_moto()
        start = time.perf_counter()
        anyio.run(ours, f"s3://bench/ours-{round_}")
        times["saturn"].append(time.perf_counter() - start)

    def aws_round(round_: int) -> None:
        cli = [aws, "s3", "cp", "--recursive", "--quiet", str(tree), f"s3://bench/aws-{round_}"]
        empty_moto()
        times["aws"].append(timed(cli)[0])

    for round_ in range(repeats):
        order = (saturn_round, aws_round) if round_ % 2 == 0 else (aws_round, saturn_round)
        for run_round in order:
            run_round(round_)
    saturn, cli_time = statistics.median(times["saturn"]), statistics.median(times["aws"])
    ROWS.append(
        (
            f"results upload 200 x 1 MiB + 200 MiB to moto (median of {repeats}): saturn",
            f"{saturn:.2f} s",
            "",
            "",
        )
    )
    ROWS.append(
        (
            "  aws s3 cp --recursive",
            f"{cli_time:.2f} s",
            f"{cli_time / saturn:.2f}x its speed",
            ">= 1x",
        )
    )
    # saturn's side runs in this process, as uploads run inside the supervisor; aws's
    # includes its start-up, shown here so the ratio can be read without it.
    empty = root / "empty"
    empty.mkdir()
    startup = statistics.median(
        timed([aws, "s3", "cp", "--recursive", "--quiet", str(empty), "s3://bench/none"])[0]
        for _ in range(repeats)
    )
    ROWS.append(
        (
            "  aws s3 cp --recursive of an empty directory (its start-up)",
            f"{startup:.2f} s",
            f"{(cli_time - startup) / saturn:.2f}x without it",
            "",
        )
    )
    shutil.rmtree(tree)


def s3_log_lag(root: Path, chunk_minutes: float = 0.05) -> None:
    """Lines are printed with their time; lag = when `logs` first shows them minus that."""
    job = root / "lag.json"
    cmd = (
        "python3 -c 'import time\nfor i in range(24):\n"
        "    print(time.time(), flush=True); time.sleep(0.5)'"
    )
    doc = {"nprocs": 1, "remote_output_path": "s3://bench/lag", "runs": [{"cmd": cmd}]}
    job.write_text(json.dumps(doc))
    proc = subprocess.Popen(
        [*SATURN, "batch", str(job), "-q", "--log-chunk-minutes", str(chunk_minutes)]
    )
    seen: dict[str, float] = {}

    def record(data: bytes) -> None:
        for line in data.decode().split():
            seen.setdefault(line, time.time())

    async def follow() -> None:
        while proc.poll() is None:
            # Until the first chunk is up there is no run output to read.
            with contextlib.suppress(InputError):
                await copy_log("s3://bench/lag/0", "stdout", record, follow=False)
            await anyio.sleep(0.2)

    try:
        anyio.run(follow)
    finally:
        if proc.poll() is None:  # the benchmark failed: do not leave the batch behind
            proc.terminate()
            proc.wait()
    lags = [seen[line] - float(line) for line in seen]
    interval = chunk_minutes * 60
    ROWS.append(
        (
            f"log lag, --log-chunk-minutes {chunk_minutes:g} ({interval:g} s), {len(lags)} lines",
            f"max {max(lags):.2f} s, median {statistics.median(lags):.2f} s",
            f"{max(lags) / (interval + 2):.2f} of interval + 2 s",
            "<= 1",
        )
    )


def s3_short_runs(root: Path, runs: int = 1000) -> None:
    async def ceiling() -> float:
        async with S3Storage() as storage:
            start = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for i in range(600):
                    tg.start_soon(storage.put, f"s3://bench/ceiling/{i}", b"0\n")
            return 600 / (time.perf_counter() - start)

    puts_per_second = anyio.run(ceiling)
    job = root / "short.json"
    doc = {"nprocs": 16, "remote_output_path": "s3://bench/short", "runs": [{"cmd": "true"}] * runs}
    job.write_text(json.dumps(doc))
    elapsed, _ = timed([*SATURN, "batch", str(job), "-q"])

    # Requests: those moto_server logged for the runs' keys, plus one HeadBucket per batch.
    with (root / "moto.log").open(errors="replace") as log:
        logged = sum(" /bench/short/" in line for line in log)
    per_run = (logged + 1) / runs
    target = puts_per_second / per_run
    ROWS.append(("S3 ceiling: concurrent small PUTs", f"{puts_per_second:.0f} PUT/s", "", ""))
    ROWS.append(
        (
            f"{runs} x `true` to s3://, nprocs 16",
            f"{runs / elapsed:.0f} runs/s",
            f"{runs / elapsed / target:.2f} of ceiling / requests-per-run",
            ">= 0.8",
        )
    )
    # 2 before leases (events, status_code), + 3 for the run's lease: the conditional
    # PUT, its read-back, the tombstone (docs/storage.md, "Leases").
    ROWS.append((f"{runs} x `true` to s3://: requests", "", f"{per_run:.2f} requests/run",
                 "<= 5 requests/run"))  # fmt: skip


def s3_benchmarks(root: Path, repeats: int) -> None:
    moto = start_moto(root)
    try:
        s3_upload(root, repeats)
        s3_log_lag(root)
        s3_short_runs(root)
    finally:
        moto.terminate()
        moto.wait(timeout=30)


def write_sweep(path: Path, commands: list[str], results: Path, **fields: object) -> Path:
    doc = {
        "name": path.stem,
        "tasks": [{"name": str(i), "command": c} for i, c in enumerate(commands)],
        "results": {"class_spec": "LocalDir", "directory": str(results)},
        **fields,
    }
    path.write_text(json.dumps(doc))
    return path


def long_tailed_sleeps(count: int, seed: int = 7) -> list[float]:
    """Sleeps of 0.05-2 s with a long tail (Pareto, shape 1.2), in a fixed random order."""
    rng = random.Random(seed)
    return [round(min(2.0, 0.05 * rng.paretovariate(1.2)), 3) for _ in range(count)]


def dask_row_cluster(root: Path, *, profile: bool = True) -> Any:
    """The Dask rows' cluster: 2 worker processes x 4 threads, ``saturn_slots`` 4 each.
    Real worker processes (behind nannies); the scheduler lives in the caller's process.
    ``profile=False``: the workers' statistical profiler off (docs/executors.md)."""
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.worker.profile.enabled": profile}):
        return LocalCluster(
            n_workers=2,
            threads_per_worker=4,
            processes=True,
            resources={"saturn_slots": 4},
            dashboard_address=None,
            local_directory=str(root / "dask"),
        )


def dask_benchmarks(root: Path, runs: int, repeats: int) -> None:
    env = {**os.environ, "XDG_DATA_HOME": str(root / "state")}
    with dask_row_cluster(root) as cluster:
        address = cluster.scheduler_address
        dask_throughput(root, runs, repeats, address, env)
        tail_makespan(root, address, env)
    with dask_row_cluster(root, profile=False) as cluster:
        dask_throughput(root, runs, repeats, cluster.scheduler_address, env, profile=False)


def dask_throughput(
    root: Path, runs: int, repeats: int, address: str, env: dict[str, str], profile: bool = True
) -> None:
    """saturn batch nprocs 4 here, or DaskExecutor over 2 workers x nprocs 2 batches.

    The Dask workers share ``saturn_slots`` 4 each (the cluster is the makespan row's
    too), so up to 8 runs at once there against 4 here; with 2 each (4 in all) the row
    measured the same (docs/benchmarks.md). Each ratio is the median of the rounds'
    own ratios: a round's commands run back to back, on the machine as it is then.
    ``profile=False``: the workers run without Dask's profiler (reported, auto only)."""
    job = write_true_job(root / "true.json", runs, root / "sat")
    executor = {
        "class_spec": "DaskExecutor",
        "scheduler_address": address,
        "slots_resource": "saturn_slots",
    }
    sweeps = {
        "auto": write_sweep(
            root / "dask-true.json", ["true"] * runs, root / "dask-out", executor=executor, nprocs=2
        )
    }
    if profile:
        # The same runs in 8 batches, one per worker thread: what the auto sizing's ~30
        # batches cost in dispatch (docs/benchmarks.md, "fourth session", "2026-12-03").
        sweeps["eight"] = write_sweep(
            root / "dask-true-8.json",
            ["true"] * runs,
            root / "dask-out",
            executor=executor,
            nprocs=2,
            batch_size=-(-runs // 8),
        )
    batch_times: list[float] = []
    times: dict[str, list[float]] = {name: [] for name in sweeps}
    for _ in range(repeats):
        shutil.rmtree(root / "sat", ignore_errors=True)
        batch_times.append(timed([*SATURN, "batch", str(job), "-q"])[0])
        for name, path in sweeps.items():
            shutil.rmtree(root / "dask-out", ignore_errors=True)
            times[name].append(timed([*SATURN, "run", str(path), "-q", "--replace"], env=env)[0])

    def rate_and_ratio(name: str) -> tuple[str, str]:
        ratios = [b / d for b, d in zip(batch_times, times[name], strict=True)]
        rate = runs / statistics.median(times[name])
        return f"{rate:.0f} runs/s", f"{statistics.median(ratios):.2f}x"

    if not profile:
        label = f"{runs} x `true` via DaskExecutor as above, workers without Dask's profiler"
        ROWS.append((label, *rate_and_ratio("auto"), "(reported)"))
        return
    batch_rate = runs / statistics.median(batch_times)
    ROWS.append((f"{runs} x `true`, 4 slots: saturn batch", f"{batch_rate:.0f} runs/s", "", ""))
    ROWS.append(
        ("  saturn run, DaskExecutor, 2 workers x nprocs 2", *rate_and_ratio("auto"), ">= 0.9x")
    )
    ROWS.append(
        (
            "  the same in 8 batches (batch_size ceil(runs / 8))",
            *rate_and_ratio("eight"),
            "(reported)",
        )
    )


def tail_makespan(root: Path, address: str, env: dict[str, str]) -> None:
    """600 long-tailed sleeps on 2 workers x nprocs 4: makespan against the ideal.

    The makespan is the sweep's: from dispatch (every task's ``submitted`` event) to the
    end of its last task (the latest ``complete`` event). The whole command's wall time,
    which adds ``saturn run``'s start (Python, importing distributed, connecting) and
    exit, is reported beside it.
    """
    sleeps = long_tailed_sleeps(600)
    slots = 8
    ideal = max(sum(sleeps) / slots, *sleeps)
    executor = {
        "class_spec": "DaskExecutor",
        "scheduler_address": address,
        "slots_resource": "saturn_slots",
    }
    for label, batch_size in (("batch_size: auto", "auto"), ("fixed 3*nprocs = 12", 12)):
        out = root / "tail-out"
        shutil.rmtree(out, ignore_errors=True)
        sweep = write_sweep(
            root / "tail.json",
            [f"sleep {s}" for s in sleeps],
            out,
            executor=executor,
            nprocs=4,
            batch_size=batch_size,
        )
        elapsed = timed([*SATURN, "run", str(sweep), "-q", "--replace"], env=env)[0]
        makespan = sweep_makespan(out)
        target = "<= 1.1x" if batch_size == "auto" else "(reported)"
        ROWS.append(
            (
                f"600 sleeps 0.05-2 s (sum {sum(sleeps):.0f} s), 8 slots, {label}: "
                "dispatch to last task end",
                f"{makespan:.1f} s (ideal {ideal:.1f} s)",
                f"{makespan / ideal:.2f}x",
                target,
            )
        )
        ROWS.append(
            (
                "  the whole saturn run command",
                f"{elapsed:.1f} s",
                f"{elapsed / ideal:.2f}x",
                "(reported)",
            )
        )


def sweep_makespan(results: Path) -> float:
    """Seconds from the sweep's dispatch to the end of its last task, from their events."""
    submitted, ends = [], []
    for events in results.glob("*/events"):
        for line in events.read_text().splitlines()[1:]:
            event = json.loads(line[2:])
            stamp = datetime.fromisoformat(event["utctimestamp"])
            if event["type"] == "submitted":
                submitted.append(stamp)
            elif event["type"] in ("complete", "failed"):
                ends.append(stamp)
    return (max(ends) - min(submitted)).total_seconds()


class BenchDaemon:
    """A ``saturn daemon --nprocs 4`` with its state on the scratch file system."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = str(root / "d.sock")
        self.proc = subprocess.Popen(
            [*SATURN, "daemon", "--nprocs", "4", "--state-dir", str(root / "state"),
             "--socket", self.socket, "--min-free-mb", "0"],
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        while not self._answers():
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            self.ps()
        except DaemonError:
            if self.proc.poll() is not None:
                raise SystemExit("the benchmark daemon exited") from None
            return False
        return True

    def ps(self) -> protocol.Snapshot:
        reply = anyio.run(request, self.socket, protocol.Ps())
        assert isinstance(reply, protocol.Snapshot)
        return reply

    def submit_and_wait(self, job: Path) -> float:
        """Seconds from ``saturn submit`` to the last run's status (by its mtime); ps is
        polled every 0.1 s only to learn that the runs are done."""
        start = time.time()
        subprocess.run([*SATURN, "submit", str(job), "--socket", self.socket],
                       stdout=subprocess.DEVNULL, check=True)  # fmt: skip
        while True:
            snapshot = self.ps()
            if not snapshot.queued and not snapshot.running:
                break
            time.sleep(0.1)
        root = Path(json.loads(job.read_text())["remote_output_path"])
        return max(p.stat().st_mtime for p in root.glob("*/status_code")) - start

    def usage(self) -> tuple[float, int]:
        """The daemon's RSS (MB) and open file descriptors."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        rss = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")
        )
        return rss / 1024, len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self) -> None:
        subprocess.run([*SATURN, "drain", "--wait", "--socket", self.socket],
                       stdout=subprocess.DEVNULL, check=True)  # fmt: skip
        self.proc.wait(30)


def daemon_benchmarks(root: Path, runs: int, repeats: int, hygiene_runs: int) -> None:
    """Throughput through ``submit`` against ``saturn batch``; RSS, fds, journal over time."""
    daemon = BenchDaemon(root)
    try:
        through: list[float] = []
        direct: list[float] = []
        for round in range(repeats):
            job = write_true_job(root / f"daemon-{round}.json", runs, root / f"d{round}")
            through.append(daemon.submit_and_wait(job))
            shutil.rmtree(root / f"d{round}")
            direct.append(timed([*SATURN, "batch", str(job), "-q"])[0])
            shutil.rmtree(root / f"d{round}")
        rate_through = runs / statistics.median(through)
        rate_direct = runs / statistics.median(direct)
        ROWS.append(
            (
                f"{runs} x `true` through `saturn submit` to a daemon --nprocs 4",
                f"{rate_through:.0f} runs/s",
                f"{rate_through / rate_direct:.2f}x of saturn batch ({rate_direct:.0f} runs/s)",
                ">= 0.9x",
            )
        )
        hygiene(daemon, root, hygiene_runs)
    finally:
        daemon.stop()


def hygiene(daemon: BenchDaemon, root: Path, runs: int) -> None:
    step = runs // 10
    journal = root / "state" / "journal"
    samples = []
    largest_journal = 0
    for _round in range(10):
        job = write_true_job(root / "hygiene.json", step, root / "h")
        daemon.submit_and_wait(job)
        samples.append(daemon.usage())
        largest_journal = max(largest_journal, journal.stat().st_size)
        shutil.rmtree(root / "h")
    (rss0, fds0), (rss1, fds1) = samples[0], samples[-1]
    ROWS.append(
        (
            f"daemon RSS after {step:,} and {runs:,} runs",
            f"{rss0:.0f} MB -> {rss1:.0f} MB",
            f"{rss1 - rss0:+.1f} MB",
            "<= +20 MB",
        )
    )
    ROWS.append((f"daemon open fds after {step:,} and {runs:,} runs", f"{fds0} -> {fds1}",
                 f"{fds1 - fds0:+d}", "<= +10"))  # fmt: skip
    ROWS.append((f"daemon journal, largest seen at each {step:,} runs",
                 f"{largest_journal / 2**20:.1f} MB", "", "bounded by compaction"))  # fmt: skip


def mixed_job(path: Path, runs: int, output: Path) -> Path:
    """``runs`` short runs, nprocs 4: one in 10 fails with 3, one in 37 with 2 after a
    line of stderr, the rest succeed."""

    def cmd(i: int) -> str:
        if i % 37 == 0:
            return f"echo 'run {i}: disk quota exceeded' >&2; exit 2"
        return "exit 3" if i % 10 == 0 else f"echo {i}"

    doc = {
        "nprocs": 4,
        "remote_output_path": str(output),
        "runs": [{"cmd": cmd(i)} for i in range(runs)],
    }
    path.write_text(json.dumps(doc))
    return path


def joblog_and_report(root: Path, runs: int, report_runs: int, repeats: int) -> None:
    """The joblog's cost on throughput, then ``saturn report`` over ``report_runs``."""
    job = write_true_job(root / "true.json", runs, root / "jl")
    rates: dict[str, list[float]] = {"plain": [], "joblog": []}
    for _ in range(repeats):
        for kind, measured in rates.items():
            shutil.rmtree(root / "jl", ignore_errors=True)
            (root / "jobs.tsv").unlink(missing_ok=True)
            extra = ["--joblog", str(root / "jobs.tsv")] if kind == "joblog" else []
            measured.append(runs / timed([*SATURN, "batch", str(job), "-q", *extra])[0])
    plain, logged = (statistics.median(rates[k]) for k in ("plain", "joblog"))
    ROWS.append((f"{runs} x `true`, nprocs 4: batch --joblog", f"{logged:.0f} runs/s",
                 f"{logged / plain:.2f}x of {plain:.0f} without", ">= 0.95x"))  # fmt: skip
    shutil.rmtree(root / "jl", ignore_errors=True)
    big = mixed_job(root / "mixed.json", report_runs, root / "mixed")
    subprocess.run([*SATURN, "batch", str(big), "-q"], check=False)
    page = root / "report.html"
    wall, rss = timed([*SATURN, "report", str(root / "mixed"), "-o", str(page)])
    ROWS.append((f"saturn report of {report_runs:,} runs", f"{wall:.1f} s, {rss / 1024:.0f} MB",
                 f"{page.stat().st_size / 2**20:.2f} MiB page", "<= 1 MiB"))  # fmt: skip
    shutil.rmtree(root / "mixed")


SECTIONS = ("throughput", "split", "memory", "s3", "dask", "daemon", "report", "progress")
ON_REQUEST = ("million",)
"""Sections run only when named with --only (they take long)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5000, help="runs in the throughput test")
    parser.add_argument("--repeats", type=int, default=3, help="medians over this many rounds")
    parser.add_argument("--split-runs", type=int, default=1_000_000)
    parser.add_argument("--yaml-runs", type=int, default=100_000)
    parser.add_argument(
        "--old-src", help="another tree's src/ (git archive REV src): split rows run it too"
    )
    parser.add_argument("--memory-runs", type=int, default=100_000)
    parser.add_argument("--report-runs", type=int, default=100_000, help="runs in the report")
    parser.add_argument("--status-tasks", type=int, default=1_000_000, help="status --name")
    parser.add_argument("--million-tasks", type=int, default=1_000_000, help="tasks of `million`")
    parser.add_argument(
        "--only",
        choices=SECTIONS + ON_REQUEST,
        action="append",
        help="run only these sections (repeatable); `million` (a 1M-task Dask sweep, "
        "about an hour) runs only when named",
    )
    args = parser.parse_args()
    sections = set(args.only or SECTIONS)
    root = scratch_root()
    # Private staging inside the scratch root: saturn refuses one that is not 0700 and ours.
    os.environ["SATURN_STAGING_DIR"] = str(root / "staging")
    try:
        if "throughput" in sections:
            throughput(root, args.runs, args.repeats)
        if "split" in sections:
            dry_run_speed(root, args)  # first: split's YAML rows load YAML in this process
            split_speed(root, args)
        if "memory" in sections:
            memory_flatness(root, args.memory_runs)
        if "s3" in sections:
            s3_benchmarks(root, args.repeats)
        if "dask" in sections:
            dask_benchmarks(root, args.runs, args.repeats)
        if "daemon" in sections:
            daemon_benchmarks(root, args.runs, args.repeats, args.memory_runs)
        if "report" in sections:
            joblog_and_report(root, args.runs, args.report_runs, args.repeats)
        if "progress" in sections:
            small = max(1, args.status_tasks // 10)
            ROWS.extend(bench_progress.status_speed(root, args.status_tasks, small, SATURN))
        if "million" in sections:
            ROWS.extend(bench_progress.dask_million(root, args.million_tasks, SATURN))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"\nmachine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"{time.strftime('%Y-%m-%d')}\n"
    )
    print("| benchmark | measured | ratio | target | met |")
    print("|---|---|---|---|---|")
    missed = 0
    for row in ROWS:
        verdict = meets(row[2], row[3])
        missed += verdict is False
        shown = {True: "yes", False: "**MISSED**", None: ""}[verdict]
        print("| " + " | ".join((*row, shown)) + " |")
    if missed:
        print(f"\n{missed} benchmark(s) missed their target", file=sys.stderr)
        sys.exit(1)


def meets(ratio: str, target: str) -> bool | None:
    """Whether the ratio column meets a target such as ``>= 0.9x`` or ``<= +20 MB``:
    their first numbers compared, when both name the same unit; None when the target is
    not a comparison (``(reported)``) or the units differ."""
    wanted = _NUMBER.match(target.strip())
    got = _NUMBER.search(ratio)
    if wanted is None or wanted.group(1) is None or got is None:
        return None
    if got.group(3) != wanted.group(3):
        return None
    value, bound = float(got.group(2)), float(wanted.group(2))
    return value >= bound if wanted.group(1) == ">=" else value <= bound


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE))
    compile_saturn()
    main()
