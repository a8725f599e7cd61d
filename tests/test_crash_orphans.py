"""Runs die with their supervisor: SIGKILL ``saturn batch`` or ``saturn run`` at random
moments of a sweep whose runs ignore TERM or leave grandchildren in their group, and
check that nothing of a killed supervisor's runs outlives its grace by more than 2 s;
then rerun with ``--skip-completed`` until every run has a status."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import CLI, pid_alive, processes_carrying, saturn_in_background, wait_for
from sweeps import write_sweep

Saturn = Callable[..., subprocess.CompletedProcess[str]]
GRACE = 0.5
RUNS = 12
KILLS = 5
MARKER = b"SATURN_RUN_REMOTE_OUTPUT_PATH="


def command(i: int) -> str:
    """Numbered lines; a third ignore TERM (and last longer than grace + 2 s), a third
    leave a grandchild sleeping in their group."""
    lines = 60 if i % 3 == 0 else 20
    head = {0: "trap '' TERM; ", 1: "sleep 30 & "}.get(i % 3, "")
    return f"{head}for n in $(seq 1 {lines}); do echo {i}-$n; sleep 0.05; done"


def live_processes_under(out: Path) -> list[int]:
    """Live processes whose environment names a run directory under ``out``."""
    return processes_carrying(MARKER + f"{out}/".encode())


def wait_all_gone(out: Path, what: str) -> None:
    wait_for(lambda: not live_processes_under(out), GRACE + 2, what)


def run_dirs_of(pids: list[int]) -> set[str]:
    """The run directories named in the environments of ``pids`` (those still readable)."""
    found = set()
    for pid in pids:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        for entry in environ.split(b"\0"):
            if entry.startswith(MARKER):
                found.add(entry[len(MARKER) :].decode())
    return found


def kill_at_random_moments(
    start: Callable[[bool], subprocess.Popen[bytes]],
    out: Path,
    rng: random.Random,
    context: str,
    lost: Callable[[], set[str]] | None = None,
) -> int:
    """Start, SIGKILL at a random moment and check the runs die, KILLS times; returns how
    many kills found runs alive. Most kills come once a run is alive (runs that ignore
    TERM never finish in between: they outlast a round); some come at any moment. With
    ``lost`` (the runs ``saturn status`` calls lost), every run alive at a kill that has
    no status afterwards must be among them."""
    hits = 0
    for kill in range(KILLS):
        proc = start(kill > 0)
        if kill % 3 != 2:
            wait_for(lambda: live_processes_under(out), 60, f"a run to start {context}")
        time.sleep(rng.uniform(0.0, 1.5))  # a random moment, not a wait for anything
        alive = live_processes_under(out)
        running = run_dirs_of(alive)
        proc.kill()
        proc.wait()
        hits += bool(alive)
        wait_all_gone(out, f"the runs of killed supervisor {kill + 1} to go {context}")
        if lost is not None:
            unfinished = {d for d in running if not Path(d, "status_code").exists()}
            assert unfinished <= lost(), f"kill {kill + 1}: not counted lost {context}"
    return hits


def seeded() -> tuple[random.Random, str]:
    seed = int(os.environ.get("SATURN_CRASH_SEED", time.time_ns() % 1_000_000))
    return random.Random(seed), f"(SATURN_CRASH_SEED={seed})"


@pytest.mark.timeout(400)
def test_sigkilled_batch_leaves_no_runs_behind(tmp_path: Path, saturn: Saturn) -> None:
    rng, context = seeded()
    out = tmp_path / "out"
    job = tmp_path / "job.json"
    runs = [{"cmd": command(i)} for i in range(RUNS)]
    job.write_text(json.dumps({"nprocs": 4, "remote_output_path": str(out), "runs": runs}))
    args = ["batch", str(job), "-q", "--grace", str(GRACE)]

    def start(again: bool) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*CLI, *args, *(["--skip-completed"] if again else [])])

    def lost() -> set[str]:
        shown = saturn("status", str(job), "--json")
        assert shown.returncode == 0, shown.stderr
        document = json.loads(shown.stdout)
        assert document["lost"] == len(document["lost_runs"])
        return {run["path"] for run in document["lost_runs"]}

    hits = kill_at_random_moments(start, out, rng, context, lost)
    assert hits, f"no kill found a run alive {context}"
    done = saturn(*args, "--skip-completed", timeout=120)
    assert done.returncode == 0, done.stderr
    for i in range(RUNS):
        assert (out / str(i) / "status_code").read_text() == "0\n", f"run {i} {context}"
        # One attempt's lines, whole and in order: none of a killed attempt's mixed in.
        lines = 60 if i % 3 == 0 else 20
        expected = "".join(f"{i}-{n}\n" for n in range(1, lines + 1))
        assert (out / str(i) / "stdout").read_text() == expected, f"run {i} {context}"
    assert not lost(), context


def test_sigkilled_run_leaves_no_runs_behind(tmp_path: Path, saturn: Saturn) -> None:
    rng, context = seeded()
    results = tmp_path / "results"
    tasks = [{"name": f"t{i}", "command": command(i)} for i in range(RUNS)]
    sweep = write_sweep(tmp_path, tasks, nprocs=4, batch_size=RUNS)
    args = ["run", str(sweep), "-q", "--replace", "--grace", str(GRACE)]

    def start(again: bool) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*CLI, *args, *(["--skip-completed"] if again else [])])

    hits = kill_at_random_moments(start, results, rng, context)
    assert hits, f"no kill found a run alive {context}"
    done = saturn(*args, "--skip-completed", timeout=120)
    assert done.returncode == 0, done.stderr
    for i in range(RUNS):
        assert (results / f"t{i}" / "status").read_text() == "success\n", f"t{i} {context}"


def _running_tasks(results: Path, count: int) -> list[int]:
    """The pids of ``count`` tasks that wrote ``started PID`` to their log."""
    logs: list[Path] = wait_for(
        lambda: (
            len(found := [p for p in results.glob("*/log") if p.read_text()]) >= count and found
        ),
        timeout=60,
        what=f"{count} running tasks",
    )
    return [int(p.read_text().split()[1]) for p in logs]


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return int(stat[stat.rfind(b")") + 2 :].split()[1])


POOLS = [
    {"class_spec": "MultiprocessingExecutor", "processes": 2},
    {"class_spec": "FuturesExecutor", "kwargs": {"max_workers": 2}},
]


@pytest.mark.parametrize("executor", POOLS, ids=lambda e: e["class_spec"])
def test_pool_workers_and_their_runs_die_with_the_client(
    tmp_path: Path, executor: dict[str, object]
) -> None:
    command = "echo started $$; trap '' TERM; sleep 300 & exec sleep 300"
    tasks = [{"name": f"t{i}", "command": command} for i in range(4)]
    sweep = write_sweep(tmp_path, tasks, executor=executor, nprocs=1, batch_size=2)
    results = tmp_path / "results"
    with saturn_in_background("run", str(sweep), "-q", "--grace", str(GRACE)) as client:
        pids = _running_tasks(results, 2)
        workers = {_parent(pid) for pid in pids}
        assert client.pid not in workers
        client.kill()
        client.wait()
    wait_all_gone(results, "the runs of the killed client to go")
    wait_for(lambda: not any(pid_alive(w) for w in workers), 10, "the pool workers to go")


def test_runs_of_a_killed_dask_worker_die_with_it(
    tmp_path: Path, saturn: Saturn, own_dask_cluster: Any
) -> None:
    victim = own_dask_cluster.add_worker(slots=2, nanny=False)
    own_dask_cluster.wait_for_workers(1)
    command = "echo started $$; trap '' TERM; sleep 300 & exec sleep 300"
    tasks = [{"name": f"t{i}", "command": command} for i in range(2)]
    executor = {"class_spec": "DaskExecutor", "scheduler_address": own_dask_cluster.address}
    sweep = write_sweep(tmp_path, tasks, executor=executor, nprocs=2, batch_size=2)
    detached = saturn("run", str(sweep), "-q", "--detach", "--grace", str(GRACE))
    assert detached.returncode == 0, detached.stderr
    results = tmp_path / "results"
    _running_tasks(results, 2)
    victim.kill()
    victim.wait()
    wait_all_gone(results, "the runs of the killed worker to go")


def _watchdog_of(pid: int) -> int | None:
    """The watchdog process started by process ``pid``, if there is one."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            if b"saturn_async.supervisor.watchdog" in cmdline and _parent(int(name)) == pid:
                return int(name)
        except OSError:
            continue
    return None


def test_a_batch_whose_watchdog_died_says_so_and_carries_on(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    runs = [{"cmd": f"while [ ! -e {gate} ]; do sleep 0.05; done"}] + [{"cmd": "true"}] * 3
    job = tmp_path / "job.json"
    job.write_text(
        json.dumps({"nprocs": 1, "remote_output_path": str(tmp_path / "out"), "runs": runs})
    )
    with saturn_in_background("batch", str(job), "-q") as batch:
        watchdog = wait_for(lambda: _watchdog_of(batch.pid), 30, "the watchdog")
        os.kill(watchdog, signal.SIGKILL)
        gate.touch()
        _, stderr = batch.communicate(timeout=60)
    assert batch.returncode == 0, stderr
    assert (
        f"the watchdog (pid {watchdog}) is gone: if this process dies, its runs will not be stopped"
    ) in stderr


def test_a_shared_watchdog_that_died_is_reported_once() -> None:
    """The watchdog of a worker process (shared by its batches, watched by a thread of
    its own): its death is reported although no batch is running, and the next batch
    gets a new one."""
    from saturn_async.supervisor.watchdog import process_watchdog

    said: list[str] = []
    watchdog = process_watchdog(0.123, said.append)
    pid = watchdog.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: said and watchdog.pid is None, 30, "the watchdog's death seen")
    assert said == [
        f"the watchdog (pid {pid}) is gone: if this process dies, its runs will not be stopped"
    ]
    assert not pid_alive(pid)  # reaped
    again = process_watchdog(0.123, said.append)
    assert again.pid is not None and again.pid != pid and pid_alive(again.pid)
    again.close()


@pytest.mark.parametrize("watchdog_too", [False, True], ids=["client", "client-and-watchdog"])
def test_terminate_of_a_sweep_whose_client_died(
    tmp_path: Path, saturn: Saturn, watchdog_too: bool
) -> None:
    tasks = [{"name": f"t{i}", "command": "echo started $$; sleep 300"} for i in range(2)]
    sweep = write_sweep(tmp_path, tasks, nprocs=2, batch_size=2)
    results = tmp_path / "results"
    with saturn_in_background("run", str(sweep), "-q", "--grace", str(GRACE)) as client:
        _running_tasks(results, 2)
        if watchdog_too:  # as a machine's OOM killer might: nothing stops the runs
            os.kill(wait_for(lambda: _watchdog_of(client.pid), 30, "its watchdog"), signal.SIGKILL)
        client.kill()
        client.wait()
    if not watchdog_too:
        wait_all_gone(results, "the watchdog to stop the runs")
    done = saturn("terminate", "--name", "lr-sweep", "--wait", "10")
    assert done.returncode == 0, done.stderr
    gone = f"the client of sweep lr-sweep (pid {client.pid}) is gone"
    if watchdog_too:
        assert f"{gone}; stopped the 2 of its runs still running" in done.stdout
    else:
        assert f"{gone}; none of its runs is running" in done.stdout
    assert not live_processes_under(results)
    for i in range(2):
        assert (results / f"t{i}" / "status").read_text() == "failure\n"


CARRIES_THE_ID = """
import os, time
from saturn_async.supervisor.watchdog import ID_VARIABLE, Watchdog
watchdog = Watchdog({grace}, print)
env = {{**os.environ, ID_VARIABLE: watchdog.id}}
command = "trap '' TERM; setsid sleep 300 & echo $! > {escaped}; sleep 300"
pid = os.posix_spawn("/bin/sh", ["sh", "-c", command], env, setsid=True)
print(pid, flush=True)
time.sleep(300)
"""


def test_the_watchdog_stops_what_carries_its_id_even_out_of_the_group(tmp_path: Path) -> None:
    """What the watchdog stops is found by the id in the environment: the run's group
    and a descendant that left it with setsid."""
    # The descendant's pid comes in a file: two writers of one pipe may interleave.
    escaped_file = tmp_path / "escaped"
    script = CARRIES_THE_ID.format(grace=GRACE, escaped=escaped_file)
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        run = int(proc.stdout.readline())
        wait_for(lambda: escaped_file.read_text().strip() if escaped_file.exists() else "")
        escaped = int(escaped_file.read_text())
        assert pid_alive(run) and pid_alive(escaped)
        proc.kill()
    wait_for(lambda: not pid_alive(run), GRACE + 2, "the run to go")
    wait_for(lambda: not pid_alive(escaped), GRACE + 2, "its setsid descendant to go")
