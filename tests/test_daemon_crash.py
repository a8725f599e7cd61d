"""SIGKILL the daemon at random moments during one sweep, restart it each time, and
check that every run ends with exactly one final status, finished runs never run
again, lost runs are recorded and run again, and nothing of an earlier incarnation
survives its successor's start."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from conftest import pid_alive, processes_carrying, wait_for
from daemons import Daemon
from saturn_async.daemon.recovery import RUN_ID_VARIABLE
from saturn_async.storage.layout import decode_events
from saturn_async.supervisor.process import start_ticks

Saturn = Callable[..., subprocess.CompletedProcess[str]]
RUNS = 240
KILLS = 20
EXPECTED_STDOUT = "".join(f"{n}\n" for n in range(1, 101))


def our_processes(state_dir: Path) -> dict[int, int]:
    """pid -> start ticks of every live process carrying this daemon's run marker."""
    needle = f"{RUN_ID_VARIABLE}={state_dir}:".encode()
    pids = processes_carrying(needle)
    return {pid: ticks for pid in pids if (ticks := start_ticks(pid)) is not None}


class Sweep:
    """Runs that count their starts in files and print 1..100 with a pause midway."""

    def __init__(self, tmp_path: Path, rng: random.Random) -> None:
        self.starts_dir = tmp_path / "starts"
        self.starts_dir.mkdir()
        self.out = tmp_path / "out"
        runs = []
        for i in range(RUNS):
            grandchild = "sleep 60 & " if i % 6 == 0 else ""
            pause = rng.choice(["0.05", "0.1", "0.2", "0.3"])
            count = f"echo x >> {self.starts_dir}/{i}"
            runs.append({"cmd": f"{count}; {grandchild}seq 1 50; sleep {pause}; seq 51 100"})
        self.job = tmp_path / "sweep.json"
        self.job.write_text(
            json.dumps({"nprocs": 4, "remote_output_path": str(self.out), "runs": runs})
        )

    def starts(self) -> Counter[int]:
        return Counter(
            {int(p.name): len(p.read_text().splitlines()) for p in self.starts_dir.iterdir()}
        )

    def statuses(self) -> dict[int, int]:
        found = {}
        for i in range(RUNS):
            with contextlib.suppress(FileNotFoundError):
                found[i] = int((self.out / str(i) / "status_code").read_text())
        return found


def test_sigkill_at_random_moments_loses_and_repeats_nothing(
    daemon: Daemon, tmp_path: Path, saturn: Saturn
) -> None:
    seed = int(os.environ.get("SATURN_CRASH_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    context = f"(SATURN_CRASH_SEED={seed})"
    sweep = Sweep(tmp_path, rng)
    flags = ("--nprocs", "4", "--grace", "0.5")
    daemon.start(*flags)
    assert saturn("submit", str(sweep.job), *daemon.address).returncode == 0
    finished_at_kill: dict[int, int] = {}  # run -> its starts when first seen finished
    in_flight_kills: Counter[int] = Counter()
    previous_starts: Counter[int] = Counter()
    for kill in range(KILLS):
        if kill % 4 == 3:  # some kills land during start-up: recovery, compaction
            daemon.kill()
            daemon.start(*flags, wait=False)
            time.sleep(rng.uniform(0.05, 0.6))  # a random moment, not a wait for anything
        else:
            time.sleep(rng.uniform(0.0, 0.4))  # a random moment, not a wait for anything
        daemon.kill()
        leftovers = our_processes(daemon.state_dir)
        now_statuses, now_starts = sweep.statuses(), sweep.starts()
        assert len(now_statuses) < RUNS, f"the sweep ended before kill {kill + 1} {context}"
        for i, count in now_starts.items():
            if i in now_statuses:
                finished_at_kill.setdefault(i, count)
            elif count > previous_starts[i]:
                in_flight_kills[i] += 1
        previous_starts = now_starts
        daemon.start(*flags)
        # Before answering, the new daemon stopped everything the killed one left.
        survivors = [
            pid for pid, ticks in leftovers.items() if pid_alive(pid) and start_ticks(pid) == ticks
        ]
        assert survivors == [], f"processes of the killed daemon still run {context}"

    wait_for(lambda: len(sweep.statuses()) == RUNS, 180, f"the sweep to finish {context}")
    assert set(sweep.statuses().values()) == {0}, context
    final_starts = sweep.starts()
    (batch,) = daemon.ps().batches
    assert (batch.succeeded, batch.failed, batch.queued, batch.running) == (RUNS, 0, 0, 0)
    lost_total = 0
    for i in range(RUNS):
        run_dir = sweep.out / str(i)
        assert (run_dir / "stdout").read_text() == EXPECTED_STDOUT, f"run {i} {context}"
        events = decode_events((run_dir / "events").read_bytes())
        types = [e.type for e in events]
        assert types[0] == "submitted" and types[-2:] == ["started", "complete"], (i, types)
        lost = types.count("lost")
        lost_total += lost
        assert lost >= in_flight_kills[i], f"run {i}: in flight at a kill, not lost {context}"
        assert final_starts[i] <= 1 + lost, f"run {i} ran more than its attempts {context}"
        if i in finished_at_kill:
            assert final_starts[i] == finished_at_kill[i], f"run {i} ran again {context}"
    assert batch.lost == lost_total
    assert sum(in_flight_kills.values()) > 0, "no kill hit a running run"
    assert saturn("drain", "--wait", *daemon.address).returncode == 0
