"""Benchmarks of issue #2, each side by side with its baseline in the same run.

Run through ``scripts/bench``; ``--help`` lists the knobs. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from saturn_async.logs.reader import copy_log
from saturn_async.spec import load_batch_file
from saturn_async.spec.yaml_loader import load_yaml_pyyaml
from saturn_async.storage.s3 import S3Storage
from saturn_async.storage.transfer import upload_directory
from saturn_async.supervisor import Supervisor

SATURN = [sys.executable, "-m", "saturn_async"]
ROWS: list[tuple[str, str, str, str]] = []


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


def split_speed(root: Path, json_runs: int, yaml_runs: int) -> None:
    recipe = root / "recipe.yaml"
    recipe.write_text("spec:\n  command: x\n")
    job = root / "big.json"
    job.write_text(
        json.dumps(
            {
                "nprocs": 4,
                "remote_output_path": str(root / "o"),
                "runs": [
                    {"cmd": f"python train.py --lr {i} --seed {i % 17} --shard s3://b/{i:07d}"}
                    for i in range(json_runs)
                ],
            }
        )
    )
    wall, rss = timed(
        [
            *SATURN,
            "split",
            str(recipe),
            str(job),
            str(root / "c1"),
            "--batch-size",
            str(max(1, json_runs // 1000)),
        ]
    )
    ROWS.append(
        (
            f"split {json_runs:,}-run JSON into 1,000 files",
            f"{wall:.2f} s, {rss / 1024:.0f} MB",
            f"{wall / 3:.2f} of 3 s, {rss / 1024 / 1024:.2f} of 1 GB",
            "<= 1",
        )
    )
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
    request = urllib.request.Request(f"{endpoint}/bench", method="PUT")
    with urllib.request.urlopen(request, timeout=10):
        pass
    return proc


def s3_upload(root: Path) -> None:
    tree = root / "results"
    tree.mkdir()
    for i in range(200):
        (tree / f"part-{i:03d}.bin").write_bytes(os.urandom(2**20))
    with (tree / "big.bin").open("wb") as f:
        for _ in range(200):
            f.write(os.urandom(2**20))

    async def ours() -> None:
        async with S3Storage() as storage:
            await upload_directory(storage, str(tree), "s3://bench/ours")

    start = time.perf_counter()
    anyio.run(ours)
    saturn = time.perf_counter() - start
    aws = str(Path(sys.executable).with_name("aws"))
    cli, _ = timed([aws, "s3", "cp", "--recursive", "--quiet", str(tree), "s3://bench/aws"])
    ROWS.append(("results upload 200 x 1 MiB + 200 MiB to moto: saturn", f"{saturn:.2f} s", "", ""))
    ROWS.append(
        ("  aws s3 cp --recursive", f"{cli:.2f} s", f"{cli / saturn:.2f}x its speed", ">= 1x")
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
            await copy_log("s3://bench/lag/0", "stdout", record, follow=False)
            await anyio.sleep(0.2)

    anyio.run(follow)
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

    async def count() -> int:
        async with S3Storage() as storage:
            return len(await storage.list("s3://bench/short"))

    # Requests: the PUTs (one per object written) plus one HeadBucket per batch.
    per_run = (anyio.run(count) + 1) / runs
    target = puts_per_second / per_run
    ROWS.append(("S3 ceiling: concurrent small PUTs", f"{puts_per_second:.0f} PUT/s", "", ""))
    ROWS.append(
        (
            f"{runs} x `true` to s3://, nprocs 16",
            f"{runs / elapsed:.0f} runs/s, {per_run:.2f} requests/run",
            f"{runs / elapsed / target:.2f} of ceiling / requests-per-run",
            ">= 0.8, <= 4 requests",
        )
    )


def s3_benchmarks(root: Path) -> None:
    moto = start_moto(root)
    try:
        s3_upload(root)
        s3_log_lag(root)
        s3_short_runs(root)
    finally:
        moto.terminate()
        moto.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5000, help="runs in the throughput test")
    parser.add_argument("--repeats", type=int, default=3, help="medians over this many rounds")
    parser.add_argument("--split-runs", type=int, default=1_000_000)
    parser.add_argument("--yaml-runs", type=int, default=100_000)
    parser.add_argument("--memory-runs", type=int, default=100_000)
    parser.add_argument("--skip-s3", action="store_true", help="leave out the S3 benchmarks")
    args = parser.parse_args()
    root = scratch_root()
    try:
        throughput(root, args.runs, args.repeats)
        split_speed(root, args.split_runs, args.yaml_runs)
        memory_flatness(root, args.memory_runs)
        if not args.skip_s3:
            s3_benchmarks(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"\nmachine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"{time.strftime('%Y-%m-%d')}\n"
    )
    print("| benchmark | measured | ratio | target |")
    print("|---|---|---|---|")
    for row in ROWS:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE))
    main()
