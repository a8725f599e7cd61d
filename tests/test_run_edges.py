"""``saturn run``: the order of its checks, ``--resume``, its end summary."""

from __future__ import annotations

import json

import yaml

from conftest import saturn_in_background, wait_for
from sweeps import gated_tasks, write_sweep


def test_a_typo_in_the_executor_is_named_before_a_name_in_use(tmp_path, saturn):
    path = write_sweep(tmp_path, [{"command": "true"}])
    assert saturn("run", str(path), "-q").returncode == 0
    path = write_sweep(tmp_path, [{"command": "true"}], executor={"class_spec": "DaskExecuter"})
    again = saturn("run", str(path), "-q")
    assert again.returncode == 2
    assert "$.executor.class_spec" in again.stderr and "DaskExecuter" in again.stderr
    assert "exists" not in again.stderr


def test_resume_reruns_failed_and_unfinished_tasks_keeping_the_record(tmp_path, saturn):
    # t1 fails until `fixed` exists; t3 succeeds, then loses its status (a task that
    # never recorded one: stopped, or its machine went away).
    tasks = [
        {"name": f"t{i}", "command": f"echo t{i} >> ran; {'[ -e fixed ]' if i == 1 else 'true'}"}
        for i in range(4)
    ]
    path = write_sweep(tmp_path, tasks)
    assert saturn("run", str(path), "-q").returncode == 1
    (tmp_path / "results/t3/status").unlink()
    (tmp_path / "fixed").touch()
    resumed = saturn("run", "--resume", "--name", "lr-sweep")
    assert resumed.returncode == 0, resumed.stderr
    assert "sweep lr-sweep: 2 of 4 tasks in " in resumed.stderr
    assert resumed.stdout.startswith("4 succeeded, 0 failed, 0 unfinished of 4 tasks in ")
    assert sorted((tmp_path / "ran").read_text().split()) == ["t0", "t1", "t1", "t2", "t3", "t3"]
    status = saturn("status", "--name", "lr-sweep", "--json")
    assert (json.loads(status.stdout)["total"], json.loads(status.stdout)["succeeded"]) == (4, 4)
    nothing = saturn("run", str(path), "--resume", "-q")
    assert (nothing.returncode, nothing.stdout) == (
        0,
        "every task has succeeded before; nothing to run\n",
    )


def test_resume_is_refused_while_the_sweep_is_followed(tmp_path, saturn):
    gate = tmp_path / "gate"
    path = write_sweep(tmp_path, gated_tasks(gate, count=1))
    with saturn_in_background("run", str(path), "-q") as run:
        wait_for(lambda: list((tmp_path / "results").glob("*/log")), what="a started task")
        refused = saturn("run", "--resume", "--name", "lr-sweep", "-q")
        gate.touch()
        run.communicate(timeout=60)
    assert refused.returncode == 2
    assert "still followed by saturn run" in refused.stderr
    assert (tmp_path / "results/t0/log").read_text() == "started\ndone 0\n"  # run once


def test_resume_refuses_what_would_rename_and_needs_a_name(tmp_path, saturn):
    path = write_sweep(tmp_path, [{"command": "true"}])
    both = saturn("run", str(path), "--resume", "--replace")
    assert both.returncode == 2 and "--resume" in both.stderr
    unnamed = saturn("run", "--resume")
    assert unnamed.returncode == 2 and "RUN_YAML" in unnamed.stderr
    unknown = saturn("run", "--resume", "--name", "nope")
    assert unknown.returncode == 2 and "no sweep named 'nope'" in unknown.stderr


def test_the_end_summary_lists_failed_tasks_with_commands(tmp_path, saturn):
    path = write_sweep(tmp_path)  # the seed's sweep: lr-0.7 fails with 3
    done = saturn("run", str(path))
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0].startswith("3 succeeded, 1 failed, 0 unfinished of 4 tasks in ")
    assert lines[1:] == [
        "failed (exit code, output path, command):",
        f"  3  {tmp_path}/results/lr-0.7  echo diverged >&2; exit 3",
        "  saturn status --name lr-sweep",
    ]
    assert "pending of" not in done.stderr


def test_resume_reads_the_sweep_file_it_is_given(tmp_path, saturn):
    path = write_sweep(tmp_path, [{"name": "a", "command": "exit 1"}])
    assert saturn("run", str(path), "-q").returncode == 1
    doc = yaml.safe_load(path.read_text())
    doc["tasks"][0]["command"] = "true"
    path.write_text(yaml.safe_dump(doc))
    assert saturn("run", str(path), "--resume", "-q").returncode == 0
    assert (tmp_path / "results/a/status").read_text() == "success\n"


def test_resume_is_refused_while_a_detached_sweep_has_batches(tmp_path, saturn, dask_cluster):
    gate = tmp_path / "gate"
    executor = {"class_spec": "DaskExecutor", "scheduler_address": dask_cluster.address}
    path = write_sweep(tmp_path, gated_tasks(gate, count=2), executor=executor, batch_size=1)
    assert saturn("run", str(path), "-q", "--detach", timeout=120).returncode == 0
    wait_for(lambda: list((tmp_path / "results").glob("*/log")), timeout=120, what="a task")
    refused = saturn("run", "--resume", "--name", "lr-sweep", "-q", timeout=120)
    gate.touch()
    assert refused.returncode == 2
    assert "batches queued or running; follow them with saturn collect" in refused.stderr
    assert saturn("collect", "--name", "lr-sweep", "-q", timeout=120).returncode == 0
    nothing = saturn("run", "--resume", "--name", "lr-sweep", "-q", timeout=120)
    assert nothing.stdout == "every task has succeeded before; nothing to run\n"
