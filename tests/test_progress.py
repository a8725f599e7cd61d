"""Pushed progress: a sweep's outcomes come from its supervisors' summaries (the ledger
under the results root) and from its batches' results, the task files only where those
say nothing (missing, stale or unreadable summaries)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import anyio
import msgspec
import pytest

from saturn_async.executors.registry import open_executor
from saturn_async.storage.ledger import LEDGER, LedgerSegment
from saturn_async.supervisor.summary import FIRST_FLUSH, LAST_FLUSH, flush_interval
from saturn_async.sweep.state import load_record
from sweeps import write_sweep

TASKS = [{"name": f"t{i}", "command": "exit 3" if i in (1, 4) else "true"} for i in range(6)]


def summary_runs(results: Path) -> dict[str, int | None]:
    """Every run the summaries under ``results`` name, merged."""
    runs: dict[str, int | None] = {}
    for path in sorted((results / LEDGER).glob("*.json")):
        runs.update(msgspec.json.decode(path.read_bytes(), type=LedgerSegment).runs)
    return runs


def status_json(saturn, name: str) -> dict[str, object]:
    done = saturn("status", "--name", name, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def failed_of(document: dict[str, object]) -> list[tuple[str, int]]:
    runs = document["failed_runs"]
    assert isinstance(runs, list)
    return [(Path(f["path"]).name, f["status_code"]) for f in runs]


def test_a_local_sweep_leaves_a_summary_stamped_with_its_submission(tmp_path, saturn):
    path = write_sweep(tmp_path, TASKS, nprocs=2)
    assert saturn("run", str(path), "-q").returncode == 1
    results = tmp_path / "results"
    segments = [
        msgspec.json.decode(p.read_bytes(), type=LedgerSegment)
        for p in (results / LEDGER).glob("*.json")
    ]
    assert segments, "no summary under the results root"
    assert {s.submitted for s in segments} == {load_record("lr-sweep").created}
    assert summary_runs(results) == {f"t{i}": 3 if i in (1, 4) else 0 for i in range(6)}
    assert not [p for p in (results / LEDGER).iterdir() if not p.name.endswith(".json")]


@pytest.mark.parametrize("second_half", ["current", "missing", "stale", "corrupted"])
def test_status_and_collect_read_summaries_and_fall_back_to_task_files(
    tmp_path, saturn, second_half
):
    """The first half of the tasks is known only to a current summary (their status files
    are gone); the second half's summary is current, missing, from an earlier submission
    or unreadable, and their files now say something else: they are read from those."""
    path = write_sweep(tmp_path, TASKS, nprocs=2)
    assert saturn("run", str(path), "-q").returncode == 1
    results = tmp_path / "results"
    created = load_record("lr-sweep").created
    shutil.rmtree(results / LEDGER, ignore_errors=True)
    (results / LEDGER).mkdir(parents=True)

    def segment(name: str, runs: dict[str, int | None], submitted: str) -> None:
        data = LedgerSegment("2026-01-01T00:00:00+00:00", runs, submitted)
        (results / LEDGER / name).write_bytes(msgspec.json.encode(data))

    segment("a.json", {"t0": 0, "t1": 3, "t2": 0}, created)
    for task in ("t0", "t1", "t2"):
        (results / task / "status").unlink()
        (results / task / "error").unlink(missing_ok=True)
    # The files of t3 (success, exit 3 before) now say exit 9; t5 is not finished.
    (results / "t3" / "status").write_text("failure\n")
    (results / "t3" / "error").write_text("9\n")
    (results / "t5" / "status").unlink()
    second = {"t3": 0, "t4": 3, "t5": 0}
    if second_half == "current":
        segment("b.json", second, created)
    elif second_half == "stale":
        segment("b.json", second, "2025-01-01T00:00:00+00:00")
    elif second_half == "corrupted":
        (results / LEDGER / "b.json").write_bytes(b'{"written": "2026", "runs": {"t3": ')

    document = status_json(saturn, "lr-sweep")
    if second_half == "current":
        expected = (4, [("t1", 3), ("t4", 3)], 0)
    else:
        expected = (2, [("t1", 3), ("t3", 9), ("t4", 3)], 1)
    assert (document["succeeded"], failed_of(document), document["not_finished"]) == expected
    collected = saturn("collect", "--name", "lr-sweep")
    succeeded, failed, unfinished = expected[0], len(expected[1]), expected[2]
    assert f"{succeeded} succeeded, {failed} failed, {unfinished} unfinished" in collected.stdout


def test_flush_interval_grows_with_age_between_its_bounds():
    assert flush_interval(0) == FIRST_FLUSH
    assert flush_interval(100) == 5.0
    assert flush_interval(10**6) == LAST_FLUSH


def test_a_dask_sweep_returns_its_outcomes_with_its_batches(tmp_path, saturn, dask_cluster):
    """The client learns outcomes from the batch futures' results: with every task file
    and summary removed once the batches ended, collect still counts them all."""
    executor = {"class_spec": "DaskExecutor", "scheduler_address": dask_cluster.address}
    path = write_sweep(tmp_path, TASKS, executor=executor, nprocs=2, batch_size=2)
    assert saturn("run", str(path), "--detach").returncode == 0
    record = load_record("lr-sweep")
    results = tmp_path / "results"

    returned: dict[str, int] = {}

    async def until_the_batches_end() -> None:
        async with open_executor(record) as dask:
            with anyio.fail_after(60):
                while True:
                    outstanding = await dask.outstanding()
                    returned.update(outstanding.outcomes)
                    if outstanding.batches == 0:
                        return
                    await anyio.sleep(0.05)

    anyio.run(until_the_batches_end)
    assert returned == {f"{results}/t{i}": 3 if i in (1, 4) else 0 for i in range(6)}
    shutil.rmtree(results / LEDGER, ignore_errors=True)
    for task in results.glob("t*"):
        (task / "status").unlink()
    collected = saturn("collect", "--name", "lr-sweep")
    assert "4 succeeded, 2 failed, 0 unfinished" in collected.stdout, collected.stderr


def test_batches_on_one_dask_worker_share_its_watchdog(tmp_path, saturn, dask_cluster):
    """A batch does not start an interpreter of its own to watch its runs: the batches
    run by one worker process share one watchdog (the id in their runs' environment)."""
    tasks = [{"name": f"t{i}", "command": "echo $SATURN_WATCHDOG_ID"} for i in range(8)]
    executor = {"class_spec": "DaskExecutor", "scheduler_address": dask_cluster.address}
    path = write_sweep(tmp_path, tasks, executor=executor, nprocs=1, batch_size=1)
    done = saturn("run", str(path), "-q")
    assert done.returncode == 0, done.stderr
    ids = {(tmp_path / "results" / f"t{i}" / "log").read_text().strip() for i in range(8)}
    assert "" not in ids
    assert len(ids) <= 2  # the cluster's two worker processes


def test_a_summary_is_not_written_through_a_link_a_task_left(tmp_path, saturn):
    """A task that puts a link at ROOT/.saturn does not redirect the summary: it is not
    written (said once), and the tasks' own files are read instead."""
    outside = tmp_path / "outside"
    outside.mkdir()
    results = tmp_path / "results"
    plant = {"name": "t0", "command": f"ln -s {outside} {results}/.saturn"}
    path = write_sweep(tmp_path, [plant, *TASKS[1:]], nprocs=1)
    done = saturn("run", str(path), "-q")
    assert done.returncode == 1, done.stderr
    assert list(outside.iterdir()) == []
    assert "could not write the outcome summary" in done.stderr
    document = status_json(saturn, "lr-sweep")
    assert (document["succeeded"], failed_of(document)) == (4, [("t1", 3), ("t4", 3)])
