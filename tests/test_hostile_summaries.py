"""Outcome summaries (ledger segments under a local results root) that are stale, odd or
planted: the tasks' status files stay the truth, and nothing hangs, crashes or is lost.
Each case runs the real CLI."""

from __future__ import annotations

import json
import os

from sweeps import write_sweep


def ledger(root):
    return root / ".saturn" / "ledger"


def test_a_task_run_again_by_hand_is_read_from_its_status_file(tmp_path, saturn):
    # t1 fails in the sweep; its batch file run again by hand (docs: skip-completed)
    # succeeds. The sweep's own summary still says t1 failed: the status file is newer.
    fixed = tmp_path / "fixed"
    tasks = [{"name": "t0", "command": "true"}, {"name": "t1", "command": f"test -e {fixed}"}]
    path = write_sweep(tmp_path, tasks, executor={"class_spec": "LocalExecutor"})
    assert saturn("run", str(path), "-q").returncode == 1
    fixed.touch()
    batches = sorted(
        (tmp_path / "state" / "saturn_async" / "sweeps" / "lr-sweep").glob("batches/*.json")
    )
    assert batches
    for batch in batches:
        assert saturn("batch", "--skip-completed", str(batch), "-q").returncode == 0
    status = saturn("status", "--name", "lr-sweep", "--json")
    assert json.loads(status.stdout)["succeeded"] == 2, status.stdout
    assert saturn("collect", "--name", "lr-sweep", "-q").returncode == 0


def test_another_sweep_of_the_same_names_is_not_taken_for_ours(tmp_path, saturn):
    results = {"class_spec": "LocalDir", "directory": str(tmp_path / "results")}
    ok = write_sweep(tmp_path, [{"name": "t0", "command": "true"}], name="a", results=results)
    assert saturn("run", str(ok), "-q").returncode == 0
    bad = write_sweep(tmp_path, [{"name": "t0", "command": "exit 4"}], name="b", results=results)
    assert saturn("run", str(bad), "-q").returncode == 1
    # t0's status file is b's now: sweep a's summary must not say it succeeded.
    status = saturn("status", "--name", "a", "--json")
    assert json.loads(status.stdout)["failed"] == 1, status.stdout


def test_odd_entries_in_the_ledger_are_passed_over(tmp_path, saturn):
    path = write_sweep(tmp_path, [{"name": "t0", "command": "true"}])
    assert saturn("run", str(path), "-q").returncode == 0
    where = ledger(tmp_path / "results")
    os.mkfifo(where / "fifo.json")  # opened for reading, it would wait for a writer
    (where / "loop.json").symlink_to("loop.json")
    (where / "zero.json").symlink_to("/dev/zero")
    (where / "dir.json").mkdir()
    status = saturn("status", "--name", "lr-sweep", "--json", timeout=30)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["succeeded"] == 1
    assert "Traceback" not in status.stderr
    assert where.joinpath("fifo.json").exists() and where.joinpath("loop.json").is_symlink()


def test_a_ledger_others_can_write_to_is_not_believed(tmp_path, saturn):
    # A summary planted by whoever may write to the ledger directory (another user of a
    # shared results root) does not make failed tasks succeed.
    path = write_sweep(tmp_path, [{"name": "t0", "command": "exit 3"}])
    assert saturn("run", str(path), "-q").returncode == 1
    where = ledger(tmp_path / "results")
    assert where.stat().st_mode & 0o022 == 0  # saturn makes it writable by us alone
    segment = json.loads(next(where.glob("*.json")).read_text())
    forged = {**segment, "written": "9999-01-01T00:00:00+00:00", "runs": {"t0": 0}}
    where.joinpath("forged.json").write_text(json.dumps(forged))
    where.chmod(0o777)
    status = saturn("status", "--name", "lr-sweep", "--json")
    assert json.loads(status.stdout)["failed"] == 1, status.stdout


def test_replace_leaves_what_a_task_directory_link_points_to(tmp_path, saturn):
    path = write_sweep(tmp_path, [{"name": "t0", "command": "true"}])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("status", "error", "status_code"):
        elsewhere.joinpath(name).write_text("not saturn's\n")
    results = tmp_path / "results"
    results.mkdir()
    results.joinpath("t0").symlink_to(elsewhere)
    saturn("run", str(path), "-q", "--replace")
    assert sorted(p.name for p in elsewhere.iterdir()) == ["error", "status", "status_code"]
    assert all(p.read_text() == "not saturn's\n" for p in elsewhere.iterdir())
