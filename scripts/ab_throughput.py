"""A/B throughput of ``saturn batch``: another tree (OLD, e.g. ``git archive REV src``
unpacked) against this one (NEW), alternating, with xargs in each round.

    python scripts/ab_throughput.py OLD_SRC [RUNS] [ROUNDS]

``RUNS`` x ``true``, nprocs 4, on /dev/shm when writable. Prints per-round rates and the
NEW/OLD ratios: the same-run baseline for a change on the supervisor's hot path.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
from pathlib import Path

import bench


def main() -> None:
    old = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    trees = {"OLD": old, "NEW": str(Path(__file__).resolve().parent.parent / "src")}
    root = bench.scratch_root()
    staging = root / "staging"
    staging.mkdir(mode=0o700)
    job = bench.write_true_job(root / "true.json", runs, root / "sat")
    rates: dict[str, list[float]] = {"OLD": [], "NEW": [], "xargs": []}
    try:
        for r in range(rounds):
            for name in ("OLD", "NEW") if r % 2 == 0 else ("NEW", "OLD"):
                shutil.rmtree(root / "sat", ignore_errors=True)
                env = {**os.environ, "PYTHONPATH": trees[name], "SATURN_STAGING_DIR": str(staging)}
                wall = bench.timed([*bench.SATURN, "batch", str(job), "-q"], env=env)[0]
                rates[name].append(runs / wall)
            xdir = root / "xargs"
            shutil.rmtree(xdir, ignore_errors=True)
            xdir.mkdir()
            for i in range(runs):
                (xdir / str(i)).mkdir()
            redirect = f"true >{xdir}/{{}}/stdout 2>{xdir}/{{}}/stderr"
            rates["xargs"].append(
                runs / bench.timed(f"seq 0 {runs - 1} | xargs -P4 -I{{}} sh -c '{redirect}'")[0]
            )
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"median runs/s: OLD {med['OLD']:.0f}, NEW {med['NEW']:.0f}, xargs {med['xargs']:.0f}")
    print(f"NEW/OLD of the medians {med['NEW'] / med['OLD']:.3f}")
    pairs = [n / o for n, o in zip(rates["NEW"], rates["OLD"], strict=True)]
    print("NEW/OLD per round: " + " ".join(f"{p:.3f}" for p in pairs))


if __name__ == "__main__":
    main()
