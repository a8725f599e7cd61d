"""Memory caps (``memory:``, ``--memory``) enforced in a cgroup per run, OOM kills, true
usage in the end events, and ``saturn status --usage``: real runs, real cgroups."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import CLI, pid_alive, wait_for
from daemons import Daemon
from saturn_async.storage.layout import decode_events
from saturn_async.supervisor.cgroups import PARENT, Hierarchy, find_hierarchy
from sweeps import events_of, write_sweep

ALLOCATE = "python3 -c 'x = b\"x\" * ({mb} << 20)'"
"""A run that touches ``mb`` MiB of memory at once (every page written)."""
OVER, UNDER = ALLOCATE.format(mb=200), ALLOCATE.format(mb=8)


@pytest.fixture
def hierarchy() -> Hierarchy:
    found = find_hierarchy()
    if isinstance(found, str):
        pytest.fail(f"memory caps need cgroup access (root, or a delegated subtree): {found}")
    return found


def batch(*args: str, env: dict[str, str] | None = None) -> tuple[int, int, str]:
    """``saturn batch -q ARGS``: its pid, exit code and stderr."""
    proc = subprocess.Popen(
        [*CLI, "batch", "-q", *args], stderr=subprocess.PIPE, text=True, env=env
    )
    _, stderr = proc.communicate(timeout=120)
    return proc.pid, proc.returncode, stderr


def events(run_dir: Path) -> list:  # type: ignore[type-arg]
    return decode_events((run_dir / "events").read_bytes())


def status(run_dir: Path) -> int:
    return int((run_dir / "status_code").read_text())


def cgroups_of(hierarchy: Hierarchy, pid: int) -> list[Path]:
    """The cgroup directories the saturn process ``pid`` made (one per supervisor)."""
    found = []
    for root in (hierarchy.memory, hierarchy.cpuacct):
        parent = Path(root or "") / PARENT
        if root is not None and parent.is_dir():
            found += [
                p for p in parent.iterdir() if re.match(rf"^[0-9]+-{pid}-[0-9]+-[0-9]+$", p.name)
            ]
    return found


def test_a_run_over_its_cap_is_oom_killed_beside_one_under_it(
    tmp_path: Path, write_job, hierarchy: Hierarchy
) -> None:
    job = write_job(
        [{"cmd": OVER, "memory": "64M"}, {"cmd": UNDER, "memory": "64M"}, "true"], nprocs=3
    )
    pid, code, stderr = batch(str(job))
    assert code == 1, stderr
    out = tmp_path / "out"
    assert [status(out / str(i)) for i in range(3)] == [137, 0, 0]
    over = events(out / "0")
    assert [e.type for e in over] == ["submitted", "started", "oom", "failed"]
    oom, failed = over[2], over[3]
    assert oom.memory_limit_kib == 64 * 1024
    assert oom.max_rss_kib is not None and oom.max_rss_kib > 32 * 1024
    assert oom.error is not None and "64M" in oom.error
    assert failed.exit_code == 137 and failed.max_rss_kib == oom.max_rss_kib
    under = events(out / "1")[-1]
    assert under.type == "complete"
    # The cgroup's peak: the whole tree, the run's 8 MiB and python itself.
    assert under.max_rss_kib is not None and 8 * 1024 < under.max_rss_kib < 64 * 1024
    assert under.cpu_user_seconds is not None and under.cpu_user_seconds > 0
    # The saturn process's cgroups (this one supervisor's) are gone with it.
    assert cgroups_of(hierarchy, pid) == []


def test_a_run_of_true_records_a_peak_under_10_mb(
    tmp_path: Path, write_job, hierarchy: Hierarchy
) -> None:
    job = write_job(["true", {"cmd": "true", "memory": "1G"}], nprocs=1)
    _, code, stderr = batch(str(job))
    assert code == 0, stderr
    uncapped, capped = events(tmp_path / "out/0")[-1], events(tmp_path / "out/1")[-1]
    # Measured in its cgroup.
    assert capped.max_rss_kib is not None and capped.max_rss_kib < 10 * 1024
    # Without one, rusage cannot see under the supervisor's own size, carried over from
    # before exec: no peak is claimed, only the bound.
    assert uncapped.max_rss_kib is None or uncapped.max_rss_kib < 10 * 1024
    assert uncapped.max_rss_at_most_kib is not None


def test_the_cgroups_of_a_killed_supervisor_are_removed_at_the_next_start(
    tmp_path: Path, write_job, hierarchy: Hierarchy
) -> None:
    job = write_job([{"cmd": "sleep 60", "memory": "64M"}], name="slow.json", nprocs=1)
    first = subprocess.Popen([*CLI, "batch", "-q", "--grace", "1", str(job)])
    try:
        run_cgroup = wait_for(
            lambda: next(
                (
                    d / "run-1"
                    for d in cgroups_of(hierarchy, first.pid)
                    if (d / "run-1/cgroup.procs").is_file()
                    and (d / "run-1/cgroup.procs").read_text().strip()
                ),
                None,
            ),
            30,
            "the run in its cgroup",
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # Its watchdog stops the run; the cgroup it leaves is empty, and stays.
    wait_for(lambda: not (run_cgroup / "cgroup.procs").read_text().strip(), 30, "the run to stop")
    assert run_cgroup.is_dir()
    again = write_job(
        [{"cmd": "true", "memory": "64M"}], name="next.json", output=str(tmp_path / "b")
    )
    _, code, stderr = batch(str(again))
    assert code == 0, stderr
    assert not run_cgroup.exists() and not run_cgroup.parent.exists()
    assert cgroups_of(hierarchy, first.pid) == []


def test_without_cgroup_access_caps_refuse_to_start_or_fall_back_to_rlimit(
    tmp_path: Path, write_job
) -> None:
    plain = tmp_path / "not-a-cgroup"
    plain.mkdir()
    env = {**os.environ, "SATURN_CGROUP_ROOT": str(plain)}
    job = write_job([{"cmd": OVER, "memory": "64M"}, {"cmd": UNDER, "memory": "64M"}])
    _, code, stderr = batch(str(job), env=env)
    assert code == 2
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert "memory caps: cannot be enforced" in stderr and str(plain) in stderr
    assert not (tmp_path / "out").exists()
    _, code, stderr = batch("--memory-cap", "best-effort", str(job), env=env)
    assert code == 1, stderr
    assert stderr.count("\n") == 1
    assert "memory caps cannot be enforced" in stderr and "RLIMIT_AS" in stderr
    assert status(tmp_path / "out/0") == 1  # MemoryError: an allocation failed, no OOM kill
    assert "MemoryError" in (tmp_path / "out/0/stderr").read_text()
    assert status(tmp_path / "out/1") == 0
    # Runs without caps never look for cgroups.
    plain_job = write_job(["true"], name="plain.json", output=str(tmp_path / "plain-out"))
    assert batch(str(plain_job), env=env)[1:] == (0, "")


def test_the_default_cap_of_batch_and_bad_sizes(tmp_path: Path, write_job, saturn) -> None:
    bad = write_job([{"cmd": "true", "memory": "4Q"}], name="bad.json")
    result = saturn("batch", str(bad))
    assert result.returncode == 2
    assert result.stderr == (
        f"saturn: error: {bad}: $.runs[0].memory: '4Q' is not a size "
        "(a positive number of bytes, or with K, M, G or T)\n"
    )
    small = write_job(["true"], name="small.json", memory=100)
    assert "$.memory: 100 is under the smallest memory cap" in saturn("batch", str(small)).stderr
    flag = saturn("batch", "--memory", "lots", str(write_job(["true"], name="ok.json")))
    assert flag.returncode == 2 and flag.stderr.count("\n") == 1
    assert "--memory: 'lots' is not a size" in flag.stderr
    assert not (tmp_path / "out").exists()


def test_the_flag_caps_runs_that_set_none(tmp_path: Path, write_job, hierarchy: Hierarchy) -> None:
    job = write_job([OVER, {"cmd": OVER, "memory": "1G"}], nprocs=1, memory=None)
    _, code, stderr = batch("--memory", "64M", str(job))
    assert code == 1, stderr
    assert [status(tmp_path / f"out/{i}") for i in range(2)] == [137, 0]


def test_status_usage_summarizes_peaks_and_suggests_nprocs(
    tmp_path: Path, write_job, saturn, hierarchy: Hierarchy
) -> None:
    sizes = [8, 16, 24, 40]
    job = write_job([ALLOCATE.format(mb=mb) for mb in sizes], nprocs=2, memory="256M")
    assert saturn("batch", "-q", str(job)).returncode == 0
    peaks = sorted(events(tmp_path / f"out/{i}")[-1].max_rss_kib for i in range(len(sizes)))
    assert peaks[-1] > 40 * 1024
    shown = saturn("status", "--usage", "--json", "--for-machine", "96c,1G", str(job))
    assert shown.returncode == 0, shown.stderr
    usage = json.loads(shown.stdout)["usage"]
    assert usage["runs"] == 4 and usage["bounded_peaks"] == 0
    assert usage["peak_memory_kib"] == {
        "median": (peaks[1] + peaks[2]) / 2,
        "p95": peaks[-1],
        "max": peaks[-1],
    }
    suggestion = usage["suggestion"]
    assert suggestion["by_memory"] == (1 << 30) // (peaks[-1] * 1024)
    assert suggestion["nprocs"] == min(suggestion["by_memory"], suggestion["by_cpu"])
    assert suggestion["machine"] == {"cores": 96, "memory_bytes": 1 << 30}
    text = saturn("status", "--usage", "--for-machine", "96c,1G", str(job)).stdout
    assert "usage of 4 runs (median, p95, max):" in text
    assert f"suggested nprocs for 96c,1G: {suggestion['nprocs']} (memory allows" in text
    bad = saturn("status", "--usage", "--for-machine", "96", str(job))
    assert bad.returncode == 2 and "--for-machine: '96' is not CORESc,MEMORY" in bad.stderr


def test_the_daemon_caps_runs_too(
    daemon: Daemon, tmp_path: Path, write_job, saturn, hierarchy: Hierarchy
) -> None:
    daemon.start("--nprocs", "2", "--memory", "64M")
    job = write_job([OVER, {"cmd": UNDER, "memory": "128M"}])
    assert saturn("submit", str(job), *daemon.address).returncode == 0
    out = tmp_path / "out"
    wait_for(lambda: all((out / f"{i}/status_code").exists() for i in range(2)), 60, "the runs")
    assert [status(out / str(i)) for i in range(2)] == [137, 0]
    assert [e.type for e in events(out / "0")][-2:] == ["oom", "failed"]
    assert events(out / "0")[-2].memory_limit_kib == 64 * 1024
    drained = saturn("drain", "--wait", "--timeout", "30", *daemon.address)
    assert drained.returncode == 0, drained.stderr
    assert daemon.wait() == 0
    assert cgroups_of(hierarchy, daemon_pid(daemon)) == []


def daemon_pid(daemon: Daemon) -> int:
    assert daemon.proc is not None
    return daemon.proc.pid


def test_a_sweep_caps_its_tasks(tmp_path: Path, saturn, hierarchy: Hierarchy) -> None:
    tasks = [
        {"name": "over", "command": OVER},
        {"name": "roomy", "command": OVER, "memory": "1G"},
    ]
    path = write_sweep(tmp_path, tasks, memory="64M")
    done = saturn("run", str(path), "-q")
    assert done.returncode == 1, done.stderr
    results = tmp_path / "results"
    assert (results / "over/error").read_text() == "137\n"
    assert [e["type"] for e in events_of(results / "over")][-2:] == ["oom", "failed"]
    assert (results / "roomy/status").read_text() == "success\n"
    bad = write_sweep(tmp_path, [{"command": "true"}, {"command": "true", "memory": "4Q"}])
    refused = saturn("run", str(bad), "-q", "--replace")
    assert refused.returncode == 2
    assert f"{bad}: $.tasks[1].memory: '4Q' is not a size" in refused.stderr


def test_what_leaves_a_capped_runs_process_group_is_killed_with_its_cgroup(
    tmp_path: Path, write_job, hierarchy: Hierarchy
) -> None:
    pidfile = tmp_path / "escaped.pid"
    job = write_job([{"cmd": f"setsid sleep 300 & echo $! > {pidfile}", "memory": "64M"}])
    pid, code, stderr = batch("--grace", "1", str(job))
    assert code == 0, stderr
    assert not pid_alive(int(pidfile.read_text()))
    assert cgroups_of(hierarchy, pid) == []


def test_a_capped_run_is_alone_in_its_cgroup_and_first_for_the_oom_killer(
    tmp_path: Path, write_job, hierarchy: Hierarchy
) -> None:
    record = (
        'cat /proc/self/cgroup > "$SATURN_RUN_LOCAL_RESULTS_DIR/own"; '
        'cat /proc/$PPID/cgroup > "$SATURN_RUN_LOCAL_RESULTS_DIR/supervisor"; '
        'cat /proc/self/oom_score_adj > "$SATURN_RUN_LOCAL_RESULTS_DIR/adj"'
    )
    job = write_job([{"cmd": record, "memory": "64M"}])
    pid, code, stderr = batch(str(job))
    assert code == 0, stderr
    results = tmp_path / "out/0/results"
    own = (results / "own").read_text().splitlines()
    assert any(f"/{PARENT}/" in line and f"-{pid}-" in line for line in own)
    assert f"/{PARENT}/" not in (results / "supervisor").read_text()
    with open("/proc/self/oom_score_adj") as f:  # what the supervisor inherited
        inherited = int(f.read())
    assert int((results / "adj").read_text()) == min(1000, inherited + 500)
