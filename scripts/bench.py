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

from saturn_async.spec import load_batch_file
from saturn_async.spec.yaml_loader import load_yaml_pyyaml
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5000, help="runs in the throughput test")
    parser.add_argument("--repeats", type=int, default=3, help="medians over this many rounds")
    parser.add_argument("--split-runs", type=int, default=1_000_000)
    parser.add_argument("--yaml-runs", type=int, default=100_000)
    parser.add_argument("--memory-runs", type=int, default=100_000)
    args = parser.parse_args()
    root = scratch_root()
    try:
        throughput(root, args.runs, args.repeats)
        split_speed(root, args.split_runs, args.yaml_runs)
        memory_flatness(root, args.memory_runs)
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
