"""``saturn run / collect / terminate / split --format slurm`` through SlurmExecutor on a
real one-node Slurm (tests/slurm.py: munged, slurmctld, slurmd on this machine).

The node has this machine's CPUs (two, say): sweeps here use nprocs 1 or 2, so that
array tasks run side by side or wait their turn, and few, short tasks.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from conftest import pid_alive, processes_carrying, saturn_in_background, wait_for
from saturn_async.executors.slurm.commands import TaskState, parse_sacct, parse_scontrol
from saturn_async.executors.slurm.script import ArrayJob, array_script
from saturn_async.storage import storage_for
from slurm import NODE
from sweeps import (
    assert_seed_outputs,
    attempts_in,
    counted_tasks,
    events_of,
    kill_tree,
    starts_of,
    write_sweep,
)


@pytest.fixture(autouse=True)
def _empty_queue(slurm_cluster):
    """Each test starts with no job queued; one a failed test left is cancelled after it."""
    yield
    subprocess.run(["scancel", "--user", "root"], check=False)
    _wait_for_empty_queue(slurm_cluster)


def _wait_for_empty_queue(cluster: Any) -> None:
    """Statuses come before Slurm has the array task complete: wait for squeue too."""
    wait_for(lambda: not cluster.queue(), timeout=60, what="an empty squeue")


def slurm_executor(tmp_path: Path, **fields: Any) -> dict[str, Any]:
    return {"class_spec": "SlurmExecutor", "batch_files": str(tmp_path / "batches"), **fields}


def record_of(tmp_path: Path, name: str = "lr-sweep") -> dict[str, Any]:
    path = tmp_path / "state" / "saturn_async" / "sweeps" / name / "sweep.json"
    record: dict[str, Any] = json.loads(path.read_text())
    return record


def started_pids(results: Path, names: list[str]) -> list[int]:
    """The pids the tasks ``names`` printed first (``started PID``), once all did."""
    pids = []
    for name in names:
        log = results / name / "log"
        words = log.read_text().split() if log.is_file() else []
        if words[:1] != ["started"] or len(words) < 2:
            return []
        pids.append(int(words[1]))
    return pids


@pytest.mark.parametrize("where", ["LocalDir", "S3"])
def test_seed_run_yaml_end_to_end(tmp_path, saturn, slurm_cluster, request, where):
    if where == "S3":
        bucket = request.getfixturevalue("s3")
        results = {"class_spec": "S3", "url": f"{bucket}/sweep"}
        executor = slurm_executor(tmp_path, batch_files=f"{bucket}/batches")
    else:
        results = {"class_spec": "LocalDir", "directory": str(tmp_path / "results")}
        executor = slurm_executor(tmp_path, partition="debug", max_concurrent=1)
    path = write_sweep(tmp_path, executor=executor, results=results, nprocs=2, batch_size=2)
    done = saturn("run", str(path), "-q", "--log-chunk-minutes", "0.02", timeout=180)
    assert done.returncode == 1, done.stderr
    job = record_of(tmp_path)["handle"]["slurm_job"]
    assert job.isdigit()
    _wait_for_empty_queue(slurm_cluster)
    if where == "LocalDir":
        assert_seed_outputs(tmp_path / "results")
        batch_dir = next((tmp_path / "batches").iterdir())
        assert sorted(p.name for p in batch_dir.glob("*.json")) == ["0.json", "1.json"]
        assert {oct(p.stat().st_mode & 0o777) for p in batch_dir.glob("*.json")} == {"0o600"}
    else:
        assert saturn("logs", f"{bucket}/sweep/lr-0.7").stdout == "diverged\n"
        assert saturn("logs", f"{bucket}/sweep/lr-0.5").stdout == "lr 0.5\nwarn 0.5\n"
    status = saturn("status", "--name", "lr-sweep", "--json")
    counts = json.loads(status.stdout)
    assert (counts["succeeded"], counts["failed"]) == (3, 1), status.stdout


def test_terminate_leaves_no_process_and_nothing_queued(tmp_path, saturn, slurm_cluster):
    # nprocs 1, one task a batch: two array tasks run (one CPU each), the third waits.
    marker = f"SLURM_TEST_MARK={uuid.uuid4().hex}"
    tasks = [
        {"name": "ignores-term", "command": "trap '' TERM; echo started $$; sleep 300"},
        {"name": "grandchild", "command": "sh -c 'sleep 300' & echo started $$; wait"},
        {"name": "queued", "command": "echo started $$; sleep 300"},
    ]
    path = write_sweep(
        tmp_path,
        tasks,
        executor=slurm_executor(tmp_path),
        nprocs=1,
        batch_size=1,
        env={"SLURM_TEST_MARK": marker.split("=")[1]},
    )
    done = saturn("run", str(path), "-q", "--detach", "--grace", "1", timeout=60)
    assert done.returncode == 0, done.stderr
    results = tmp_path / "results"
    pids = wait_for(
        lambda: started_pids(results, ["ignores-term", "grandchild"]), timeout=60, what="2 runs"
    )
    assert processes_carrying(marker.encode())
    stopped = saturn("terminate", "--name", "lr-sweep", "--wait", "60", timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert not slurm_cluster.queue()
    wait_for(lambda: not processes_carrying(marker.encode()), timeout=30, what="no run left")
    assert not any(pid_alive(pid) for pid in pids)
    for task in tasks:
        out = results / task["name"]
        assert out.joinpath("status").read_text() == "failure\n"
        assert "terminated" in [e["type"] for e in events_of(out)]
    status = saturn("status", "--name", "lr-sweep", "--json")
    assert json.loads(status.stdout)["failed"] == 3, status.stdout


@pytest.mark.timeout(300)
def test_array_task_over_time_limit_is_reported_as_timeout(tmp_path, saturn, slurm_cluster):
    # Slurm's limits are in minutes, checked every 30 s: this test takes 1-2 minutes. The
    # run ignores TERM and the grace outlasts KillWait, so Slurm's KILL ends saturn batch
    # before it records the run: the client gives the task its status, naming TIMEOUT.
    tasks = [
        {"name": "quick", "command": "echo done"},
        {"name": "slow", "command": "trap '' TERM; echo started; sleep 600"},
    ]
    path = write_sweep(
        tmp_path, tasks, executor=slurm_executor(tmp_path, time_limit="1"), nprocs=2, batch_size=2
    )
    done = saturn("run", str(path), "-q", "--grace", "60", timeout=300)
    assert done.returncode == 1, done.stderr
    job = record_of(tmp_path)["handle"]["slurm_job"]
    assert f"saturn: array task {job}_0 (batch 0): TIMEOUT" in done.stderr
    results = tmp_path / "results"
    assert results.joinpath("quick", "status").read_text() == "success\n"
    assert results.joinpath("slow", "status").read_text() == "failure\n"
    last = events_of(results / "slow")[-1]
    assert last["type"] == "terminated" and "TIMEOUT" in last["error"], last
    _wait_for_empty_queue(slurm_cluster)


def test_slurmd_killed_mid_array_then_restarted(tmp_path, saturn, slurm_cluster):
    # slurmd dies (SIGKILL) while two array tasks hold and a third waits; the running
    # ones live on in their slurmstepd. Restarted, it runs the rest: every task ends with
    # a status, and none starts (or completes) twice.
    starts, gate, results = tmp_path / "starts", tmp_path / "gate", tmp_path / "results"
    tasks = counted_tasks(starts, gate, done=2, held=3)
    path = write_sweep(tmp_path, tasks, executor=slurm_executor(tmp_path), nprocs=1, batch_size=1)
    with saturn_in_background("run", str(path), "-q") as run:
        wait_for(
            lambda: starts_of(starts).keys() >= {"f0", "f1", "h0", "h1"},
            timeout=120,
            what="2 finished tasks and 2 held",
        )
        slurm_cluster.kill("slurmd")
        gate.touch()
        wait_for(
            lambda: (results / "h0" / "status").exists() and (results / "h1" / "status").exists(),
            timeout=60,
            what="the held tasks finishing without slurmd",
        )
        slurm_cluster.start_slurmd()
        _, stderr = run.communicate(timeout=180)
    assert run.returncode == 0, stderr
    assert starts_of(starts) == {"f0": 1, "f1": 1, "h0": 1, "h1": 1, "h2": 1}
    for task in ("f0", "f1", "h0", "h1", "h2"):
        assert (results / task / "status").read_text() == "success\n"
        types = [e["type"] for e in events_of(results / task)]
        assert types == ["submitted", "started", "complete"], (task, types)
    _wait_for_empty_queue(slurm_cluster)


def test_slurmctld_restarted_while_followed(tmp_path, saturn, slurm_cluster):
    # The controller stops (SIGTERM: it saves its state; a SIGKILLed one forgets what
    # started since its last save) while saturn run follows two held tasks; once one of
    # the run's squeue calls has failed, it comes back, then the tasks finish: following
    # outlived the outage (the last answer stood) and ends with every task succeeded.
    starts, gate = tmp_path / "starts", tmp_path / "gate"
    tasks = counted_tasks(starts, gate, done=0, held=2)
    path = write_sweep(tmp_path, tasks, executor=slurm_executor(tmp_path), nprocs=1, batch_size=1)
    with saturn_in_background("run", str(path), "-q") as run:
        wait_for(lambda: starts_of(starts).keys() >= {"h0", "h1"}, timeout=120, what="2 runs")
        slurm_cluster.stop_daemon("slurmctld")
        failing = wait_for(lambda: _children_named(run.pid, "squeue"), timeout=30)
        wait_for(lambda: not any(pid_alive(pid) for pid in failing), timeout=60)
        assert run.poll() is None, run.communicate()[1]
        slurm_cluster.start_slurmctld()
        gate.touch()
        _, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr
    assert starts_of(starts) == {"h0": 1, "h1": 1}
    _wait_for_empty_queue(slurm_cluster)


def _children_named(pid: int, name: str) -> list[int]:
    """The children of process ``pid`` (started by any of its threads) named ``name``."""
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in children.read_text().split():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{child}/comm").read_text().strip() == name:
                    found.append(int(child))
    return found


@pytest.mark.timeout(300)
@pytest.mark.parametrize("where", ["LocalDir", "S3"])
def test_requeued_after_node_failure_reruns_only_tasks_without_status(
    tmp_path, saturn, slurm_cluster, request, where
):
    # The node is lost (slurmd, the array task's slurmstepd and every process below them
    # SIGKILLed, then the node marked DOWN): Slurm ends the array task NODE_FAIL and,
    # with --requeue, runs it again once the node is back, skipping what finished. On
    # S3 the finished runs are told by their events' submitted time (the sweep's).
    starts, gate = tmp_path / "starts", tmp_path / "gate"
    if where == "S3":
        root = f"{request.getfixturevalue('s3')}/sweep"
        results = {"class_spec": "S3", "url": root}
    else:
        root = str(tmp_path / "results")
        results = {"class_spec": "LocalDir", "directory": root}
    tasks = counted_tasks(starts, gate, done=2, held=1)
    executor = slurm_executor(tmp_path, sbatch_args=["--requeue"])
    path = write_sweep(tmp_path, tasks, executor=executor, results=results, nprocs=1, batch_size=3)
    done = saturn("run", str(path), "-q", "--detach", timeout=60)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: "h0" in starts_of(starts), timeout=120, what="the held task started")
    wait_for(lambda: _stored([f"{root}/f0/status", f"{root}/f1/status"]), what="2 statuses")
    node = NODE
    stepds = slurm_cluster.stepds()
    assert stepds
    slurm_cluster.kill("slurmd")
    for pid in stepds:
        kill_tree(pid)
    wait_for(lambda: not any(pid_alive(p) for p in stepds), timeout=30, what="stepds gone")
    slurm_cluster.scontrol("update", f"nodename={node}", "state=down", "reason=lost")
    job = record_of(tmp_path)["handle"]["slurm_job"]
    wait_for(lambda: "Restarts=1" in slurm_cluster.scontrol("show", "job", job), timeout=60)
    gate.touch()
    slurm_cluster.start_slurmd()
    slurm_cluster.scontrol("update", f"nodename={node}", "state=resume")
    _assert_only_h0_ran_again(saturn, slurm_cluster, starts, root, timeout=300)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("how", ["scontrol requeue", "node down and back"])
def test_a_requeue_reruns_the_runs_it_stopped(tmp_path, saturn, slurm_cluster, how):
    # Slurm TERMs every process of the array task (saturn batch and its runs at once),
    # then runs it again: the run it stopped records nothing, so the requeued array
    # task runs it again, and only it.
    starts, gate, parent = tmp_path / "starts", tmp_path / "gate", tmp_path / "parent"
    root = tmp_path / "results"
    results = {"class_spec": "LocalDir", "directory": str(root)}
    tasks = counted_tasks(starts, gate, done=2, held=1, parent=parent)
    executor = slurm_executor(tmp_path, sbatch_args=["--requeue"])
    path = write_sweep(tmp_path, tasks, executor=executor, results=results, nprocs=1, batch_size=3)
    done = saturn("run", str(path), "-q", "--detach", timeout=60)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: "h0" in starts_of(starts) and parent.exists(), timeout=120, what="h0")
    wait_for(lambda: _stored([f"{root}/f0/status", f"{root}/f1/status"]), what="2 statuses")
    supervisor = int(parent.read_text())
    job = record_of(tmp_path)["handle"]["slurm_job"]
    if how == "scontrol requeue":
        slurm_cluster.scontrol("requeue", f"{job}_0")
    else:
        slurm_cluster.scontrol("update", f"nodename={NODE}", "state=down", "reason=test")
    wait_for(lambda: not pid_alive(supervisor), timeout=60, what="saturn batch stopped")
    assert not (root / "h0" / "status").exists()
    wait_for(lambda: "Restarts=1" in slurm_cluster.scontrol("show", "job", job), timeout=60)
    gate.touch()
    if how != "scontrol requeue":
        wait_for(lambda: _resumed(slurm_cluster), timeout=60, what="the node back")
    _assert_only_h0_ran_again(saturn, slurm_cluster, starts, root, timeout=240)


def _assert_only_h0_ran_again(
    saturn: Any, cluster: Any, starts: Path, root: Any, timeout: float
) -> None:
    """After a requeue of counted_tasks(done=2, held=1): collect ends with every task
    succeeded, the held one started twice with one attempt in its log, the rest once."""
    collected = saturn("collect", "--name", "lr-sweep", "-q", timeout=timeout)
    assert collected.returncode == 0, collected.stderr
    assert starts_of(starts) == {"f0": 1, "f1": 1, "h0": 2}
    status = json.loads(saturn("status", "--name", "lr-sweep", "--json").stdout)
    assert status["succeeded"] == 3, status
    assert len(attempts_in(saturn("logs", f"{root}/h0").stdout)) == 1
    _wait_for_empty_queue(cluster)


def _resumed(cluster: Any) -> bool:
    """Ask Slurm to take the node back (refused while its jobs are still being killed);
    whether it is up now."""
    argv = ["scontrol", "update", f"nodename={NODE}", "state=resume"]
    subprocess.run(argv, capture_output=True, check=False, env=cluster.env())
    return not cluster.node_state().startswith(("down", "drain"))


def _stored(locations: list[str]) -> bool:
    """Whether every location (a local path or an s3:// URL) holds something."""

    async def main() -> bool:
        async with storage_for(locations[0]) as storage:
            return all([await storage.get(location) is not None for location in locations])

    return anyio.run(main)


def test_dry_run_and_split_scripts_pass_sbatch_test_only(
    tmp_path, saturn, slurm_cluster, write_job
):
    executor = slurm_executor(
        tmp_path,
        partition="debug",
        account="proj42",
        time_limit="00:10:00",
        max_concurrent=1,
        sbatch_args=["--mem=100M", "--requeue"],
    )
    path = write_sweep(tmp_path, executor=executor, nprocs=2, batch_size=2)
    dry = saturn("run", str(path), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    script = dry.stdout
    for line in ("#SBATCH --array=0-1%1", "#SBATCH --cpus-per-task=2", "#SBATCH --partition=debug",
                 "#SBATCH --account=proj42", "#SBATCH --time=00:10:00", "#SBATCH --mem=100M"):  # fmt: skip
        assert line in script.splitlines(), script
    assert script.splitlines()[-1].startswith("exec ")
    assert not (tmp_path / "batches").exists() and not (tmp_path / "state").exists()
    checked = subprocess.run(
        ["sbatch", "--test-only"], input=script, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0 and "to start at" in checked.stderr, checked.stderr

    job = write_job(["echo a", "echo b", "echo c"], nprocs=1)
    split = saturn("split", "--format", "slurm", "--batch-size", "2", "-", str(job), "out")
    assert split.returncode == 0, split.stderr
    out = tmp_path / "out"
    assert "and slurm.sh to" in split.stdout and not (out / "recipe.yaml").exists()
    lines = (out / "slurm.sh").read_text().splitlines()
    assert "#SBATCH --array=0-1" in lines and "#SBATCH --cpus-per-task=1" in lines
    assert lines[-1].endswith(f'{out}/"$SLURM_ARRAY_TASK_ID".json')
    checked = subprocess.run(
        ["sbatch", "--test-only", str(out / "slurm.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0 and "to start at" in checked.stderr, checked.stderr
    assert not slurm_cluster.queue()
    refused = saturn("split", "--format", "slurm", str(path), str(job), "out2")
    assert refused.returncode == 2 and "give - for RECIPE" in refused.stderr, refused.stderr
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"partition": "nosuch"}, "$.executor.partition", "Invalid partition name specified"),
        ({"batch_files": "relative/dir"}, "$.executor.batch_files", "must be an absolute path"),
        ({"sbatch_args": ["--mem=1G\necho injected"]}, "$.executor.sbatch_args[0]", ""),
        ({"max_concurrent": 0}, "$.executor.max_concurrent", ""),
    ],
    ids=["unknown-partition", "relative-batch-files", "newline-in-sbatch-arg", "max-concurrent-0"],
)
def test_bad_config_is_one_line_naming_the_field(
    tmp_path, saturn, slurm_cluster, fields, field, message
):
    path = write_sweep(tmp_path, executor={**slurm_executor(tmp_path), **fields}, nprocs=1)
    done = saturn("run", str(path), "-q")
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert field in done.stderr and message in done.stderr, done.stderr
    assert not (tmp_path / "batches").exists() or not any((tmp_path / "batches").iterdir())
    assert not (tmp_path / "state" / "saturn_async" / "sweeps" / "lr-sweep").exists()
    assert not slurm_cluster.queue()


def test_slurm_not_installed_is_one_line(tmp_path, saturn):
    path = write_sweep(tmp_path, executor=slurm_executor(tmp_path), nprocs=1)
    done = saturn("run", str(path), "-q", env={**os.environ, "PATH": str(tmp_path / "none")})
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "$.executor.class_spec: Slurm is not installed here: sbatch" in done.stderr


def test_states_parsed_from_sacct_and_scontrol():
    # What sacct prints with accounting on (not run here: no slurmdbd), and scontrol's
    # records of an array with a pending range; requeued tasks count their restarts.
    sacct = "12_0|COMPLETED|0:0\n12_1|CANCELLED by 0|0:15\n12_[2-4%2]|PENDING|0:0\n12|x|0:0\n"
    assert parse_sacct(sacct) == {
        0: TaskState("COMPLETED", 0, "0:0"),
        1: TaskState("CANCELLED", 0, "0:15"),
        **{i: TaskState("PENDING", 0, "0:0") for i in (2, 3, 4)},
    }
    scontrol = (
        "JobId=13 ArrayJobId=12 ArrayTaskId=0 JobName=a b JobState=TIMEOUT Reason=TimeLimit "
        "Restarts=0 ExitCode=0:15\n"
        "JobId=12 ArrayJobId=12 ArrayTaskId=1,3-4%1 JobState=PENDING Restarts=1 ExitCode=0:0\n"
    )
    assert parse_scontrol(scontrol) == {
        0: TaskState("TIMEOUT", 0, "0:15"),
        **{i: TaskState("PENDING", 1, "0:0") for i in (1, 3, 4)},
    }


def test_the_array_asks_for_the_gpus_of_its_batches() -> None:
    """Tasks asking for GPUs make the array ask Slurm for them (--gpus-per-task)."""
    job = ArrayJob(name="n", batch_dir="/b", count=2, cpus_per_task=4, program=["saturn"])
    assert "--gpus-per-task" not in array_script(job)
    with_gpus = array_script(ArrayJob(**{**job.__dict__, "gpus_per_task": 8}))
    assert "#SBATCH --gpus-per-task=8\n" in with_gpus
