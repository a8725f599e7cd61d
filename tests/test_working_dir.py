"""Where runs start: ``working_dir`` of sweeps and batch files, and Dask's default."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import msgspec

from saturn_async.executors.jobs import WorkerJob
from saturn_async.executors.worker import run_batches
from saturn_async.spec.models import Batch, Run
from sweeps import events_of, write_sweep

# What seed 003's `python train.py` needs: a file beside the client, read by a relative path.
READ_BESIDE = [{"name": "train", "command": "cat train.py; pwd"}]


def test_dask_runs_start_in_the_client_cwd(tmp_path, saturn, dask_cluster):
    (tmp_path / "train.py").write_text("print('training')\n")
    executor = {"class_spec": "DaskExecutor", "scheduler_address": dask_cluster.address}
    path = write_sweep(tmp_path, READ_BESIDE, executor=executor)
    done = saturn("run", str(path), "-q")  # from tmp_path; the workers run elsewhere
    log = (tmp_path / "results/train/log").read_text()
    # Before: `cat: train.py: No such file or directory`, in the worker's directory.
    assert done.returncode == 0, log
    assert log == f"print('training')\n{tmp_path}\n"


def test_a_sweep_working_dir_is_relative_to_the_client(tmp_path, saturn):
    (tmp_path / "code").mkdir()
    (tmp_path / "code/train.py").write_text("train\n")
    path = write_sweep(tmp_path, READ_BESIDE, working_dir="code")
    done = saturn("run", str(path), "-q")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "results/train/log").read_text() == f"train\n{tmp_path}/code\n"


def test_a_missing_working_dir_fails_the_runs_not_the_sweep(tmp_path, saturn):
    path = write_sweep(tmp_path, READ_BESIDE, working_dir=str(tmp_path / "gone"))
    done = saturn("run", str(path), "-q")
    assert done.returncode == 1, done.stderr
    task = tmp_path / "results/train"
    assert task.joinpath("status").read_text() == "failure\n"
    failed = [e for e in events_of(task) if e["type"] == "failed"]
    assert "working_dir: no such directory" in failed[0]["error"]
    assert str(tmp_path / "gone") in failed[0]["error"]


def test_a_batch_file_working_dir_is_relative_to_saturn_batch(tmp_path, write_job, saturn):
    (tmp_path / "code").mkdir()
    assert saturn("batch", str(write_job(["pwd"], working_dir="code")), "-q").returncode == 0
    assert (tmp_path / "out/0/stdout").read_text() == f"{tmp_path}/code\n"
    nul = saturn("batch", str(write_job(["pwd"], working_dir="co\u0000de")))
    assert nul.returncode == 2
    assert "$.working_dir: holds a NUL byte" in nul.stderr


def test_a_worker_without_the_client_cwd_runs_in_its_own_and_warns(tmp_path, caplog):
    # run_batches is what a Dask worker calls: here in this process, whose cwd is the
    # worker's, with a client cwd this machine does not have.
    batch = Batch(
        nprocs=1,
        remote_output_path=str(tmp_path / "out"),
        runs=[Run(cmd="pwd", remote_output_path=str(tmp_path / "out/0"))],
        layout="sweep",
    )
    job = WorkerJob(sweep="s", client_cwd=str(tmp_path / "elsewhere"))
    with caplog.at_level(logging.WARNING, logger="saturn_async.executors.worker"):
        summary = run_batches(job, [msgspec.json.encode(batch)])
    assert summary.succeeded == 1
    assert (tmp_path / "out/0/log").read_text() == f"{os.getcwd()}\n"
    assert f"{tmp_path / 'elsewhere'} (the working directory of saturn run)" in caplog.text
    assert Path(os.getcwd()).is_dir()
