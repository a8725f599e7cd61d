"""KubernetesExecutor: its manifests against the API schema, its calls against a fake API
server (tests/fake_kube.py), and its pods' command run for real, the test playing kubelet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from conftest import pid_alive, saturn_in_background, saturn_without, stop_process, wait_for
from sweeps import SEED_TASKS, write_sweep

NAMESPACE = "sweeps"
JOBS = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
SECRETS = f"/api/v1/namespaces/{NAMESPACE}/secrets"
BATCHES_MOUNT = "/etc/saturn-async/batches"
STAGING_MOUNT = "/var/lib/saturn-async/staging"
FULL = {
    "max_pods": 4,
    "service_account": "sweeper",
    "resources": {"memory": "2Gi", "nvidia.com/gpu": 1},
    "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "env": {"AWS_REGION": "us-east-1"},
    "env_from_secrets": ["s3-credentials"],
    "backoff_limit_per_index": 2,
    "ttl_seconds_after_finished": 86400,
}


def kube_executor(**fields: Any) -> dict[str, Any]:
    return {
        "class_spec": "KubernetesExecutor",
        "image": "ghcr.io/example/saturn:1",
        "namespace": NAMESPACE,
        "max_pods": 3,
        **fields,
    }


def s3_results(bucket: str) -> dict[str, str]:
    return {"class_spec": "S3", "url": f"{bucket}/sweeps"}


@pytest.fixture
def play_pod() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start pods as the kubelet would; any still running at the end is stopped by PID
    (SIGTERM, so saturn batch stops its runs; SIGKILL if that takes over 30 s)."""
    started: list[subprocess.Popen[bytes]] = []

    def play(job: dict[str, Any], index: int, workdir: Path, kube: Any) -> subprocess.Popen[bytes]:
        pod = _start_pod(job, index, workdir, kube)
        started.append(pod)
        return pod

    yield play
    for pod in started:
        if pod.poll() is None:
            stop_process(pod, timeout=30)


def _start_pod(
    job: dict[str, Any], index: int, workdir: Path, kube: Any
) -> subprocess.Popen[bytes]:
    """The pod of ``index``: the container's command, with JOB_COMPLETION_INDEX, the
    Secrets' files and variables and an emptyDir (here, local directories)."""
    spec = job["spec"]["template"]["spec"]
    container = spec["containers"][0]
    script = container["command"][2]
    pod_dir = workdir / f"pod-{index}"
    (pod_dir / "staging").mkdir(parents=True)
    script = script.replace(STAGING_MOUNT, str(pod_dir / "staging"))
    for volume in spec["volumes"]:
        if "secret" in volume:
            data = kube.secret(NAMESPACE, volume["secret"]["secretName"])
            (pod_dir / "batches").mkdir()
            for name, text in data.items():
                (pod_dir / "batches" / name).write_text(text)
            script = script.replace(BATCHES_MOUNT, str(pod_dir / "batches"))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "JOB_COMPLETION_INDEX": str(index),
    }
    for source in container.get("envFrom", []):
        env.update(kube.secret(NAMESPACE, source["secretRef"]["name"]) or {})
    assert container["command"][:2] == ["sh", "-c"]
    return subprocess.Popen(["sh", "-c", script], env=env, cwd=pod_dir)


def complete(kube: Any, job: dict[str, Any], indexes: str) -> None:
    job["status"] = {
        "completedIndexes": indexes,
        "succeeded": job["spec"]["completions"],
        "conditions": [{"type": "Complete", "status": "True"}],
    }


@pytest.mark.parametrize("version", ["1.30.0", kubernetes_validate.latest_version()])
@pytest.mark.parametrize(
    "fields", [{}, FULL, {**FULL, "batches_via": "s3"}], ids=["minimal", "full", "s3-batches"]
)
def test_every_manifest_validates_strictly(tmp_path, saturn, version, fields):
    path = write_sweep(
        tmp_path,
        executor=kube_executor(**fields),
        results=s3_results("s3://sweep-bucket"),
        nprocs=2,
        batch_size=2,
    )
    done = saturn("run", str(path), "--dry-run")
    assert done.returncode == 0, done.stderr
    objects = list(yaml.safe_load_all(done.stdout))
    kinds = [o["kind"] for o in objects]
    secrets = [] if fields.get("batches_via") == "s3" else ["Secret"]
    assert kinds == [*secrets, *(["Secret"] if fields.get("env") else []), "Job"]
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
    job = objects[-1]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == 2  # 4 tasks in batches of 2
    resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["cpu"] == "2"
    assert not (tmp_path / "state").exists()  # --dry-run records nothing


def test_run_then_pods_then_collect(tmp_path, saturn, s3, fake_kube, play_pod):
    path = write_sweep(
        tmp_path, executor=kube_executor(), results=s3_results(s3), nprocs=2, batch_size=2
    )
    done = saturn("run", str(path), "-q", "--detach", "--log-chunk-minutes", "0.02")
    assert done.returncode == 0, done.stderr
    job = fake_kube.only_job()
    name = job["metadata"]["name"]
    assert fake_kube.calls() == [
        ("POST", SECRETS),
        ("POST", JOBS),
        ("PATCH", f"{SECRETS}/{name}-batches"),
    ]
    assert {r.authorization for r in fake_kube.requests} == {"Bearer fake-token"}
    assert job["spec"]["completions"] == 2 and job["spec"]["parallelism"] == 2
    batches = fake_kube.secret(NAMESPACE, f"{name}-batches")
    assert batches is not None and sorted(batches) == ["0.json", "1.json"]
    patch = fake_kube.requests[2]
    assert patch.body == {
        "metadata": {
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": name,
                    "uid": job["metadata"]["uid"],
                }
            ]
        }
    }
    pods = [play_pod(job, i, tmp_path, fake_kube) for i in range(2)]
    assert [pod.wait(timeout=60) for pod in pods] == [0, 0]  # lr-0.7's failure is recorded
    complete(fake_kube, job, "0-1")
    collected = saturn("collect", "--name", "lr-sweep", "-q")
    assert collected.returncode == 1, collected.stderr  # lr-0.7 failed
    assert len(fake_kube.requests) == 3  # every task had a status: no need to ask the Job
    log = saturn("logs", f"{s3}/sweeps/lr-0.5")
    assert log.stdout == "lr 0.5\nwarn 0.5\n", log.stderr
    status = json.loads(saturn("status", "--name", "lr-sweep", "--json").stdout)
    assert (status["succeeded"], status["failed"]) == (3, 1), status


def test_large_sweeps_pass_batch_files_through_s3(tmp_path, saturn, s3, fake_kube, play_pod):
    executor = kube_executor(batches_via="s3")
    path = write_sweep(tmp_path, executor=executor, results=s3_results(s3), nprocs=2, batch_size=2)
    done = saturn("run", str(path), "-q", "--detach")
    assert done.returncode == 0, done.stderr
    assert fake_kube.calls() == [("POST", JOBS)]  # no Secret
    job = fake_kube.only_job()
    assert (
        f"{s3}/sweeps/.saturn-batches/{job['metadata']['name']}"
        in (job["spec"]["template"]["spec"]["containers"][0]["command"][2])
    )
    pods = [play_pod(job, i, tmp_path, fake_kube) for i in range(2)]
    assert [pod.wait(timeout=60) for pod in pods] == [0, 0]
    status = json.loads(saturn("status", "--name", "lr-sweep", "--json").stdout)
    assert (status["succeeded"], status["failed"]) == (3, 1), status


def test_too_large_for_a_secret(tmp_path, saturn):
    tasks = [{"name": f"t{i}", "command": "echo " + "x" * 1000} for i in range(1200)]
    executor = kube_executor(batches_via="secret")
    path = write_sweep(tmp_path, tasks, executor=executor, results=s3_results("s3://sweep-bucket"))
    done = saturn("run", str(path), "--dry-run")
    assert done.returncode == 2
    assert (
        "$.executor.batches_via: the batch files are too large for a Kubernetes Secret"
        in done.stderr
    )
    path = write_sweep(
        tmp_path, tasks, executor=kube_executor(), results=s3_results("s3://sweep-bucket")
    )
    auto = saturn("run", str(path), "--dry-run")
    assert auto.returncode == 0, auto.stderr
    assert auto.stdout.startswith("# batch files go to s3://sweep-bucket/sweeps/.saturn-batches/")
    assert [o["kind"] for o in yaml.safe_load_all(auto.stdout)] == ["Job"]


def test_terminate_deletes_the_job_in_the_foreground(tmp_path, saturn, s3, fake_kube, play_pod):
    pids = tmp_path / "pids"
    pids.mkdir()
    tasks = [{"name": f"t{i}", "command": f"touch {pids}/$$; exec sleep 300"} for i in range(4)]
    executor = kube_executor(max_pods=1)
    path = write_sweep(
        tmp_path, tasks, executor=executor, results=s3_results(s3), nprocs=2, batch_size=2
    )
    done = saturn("run", str(path), "-q", "--detach", "--grace", "2")
    assert done.returncode == 0, done.stderr
    job = fake_kube.only_job()
    name = job["metadata"]["name"]
    assert job["spec"]["parallelism"] == 1
    assert job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 32
    pod = play_pod(job, 0, tmp_path, fake_kube)  # batch 1 waits: parallelism 1
    running = wait_for(
        lambda: [int(p.name) for p in pids.iterdir()][:2] if len(list(pids.iterdir())) == 2 else [],
        timeout=60,
        what="2 running tasks",
    )
    with saturn_in_background("terminate", "--name", "lr-sweep", "--wait", "60") as stop:
        # Play the controller: on the DELETE, stop the pod (SIGTERM), then drop the Job.
        wait_for(lambda: ("DELETE", f"{JOBS}/{name}") in fake_kube.calls(), what="the DELETE")
        pod.send_signal(signal.SIGTERM)
        assert pod.wait(timeout=30) == 143
        fake_kube.remove_job(NAMESPACE, name)
        _, stderr = stop.communicate(timeout=60)
    assert stop.returncode == 0, stderr
    delete = next(r for r in fake_kube.requests if r.method == "DELETE")
    assert delete.body == {"propagationPolicy": "Foreground"}
    assert fake_kube.secret(NAMESPACE, f"{name}-batches") is None  # owned by the Job
    assert not any(pid_alive(pid) for pid in running)
    status = json.loads(saturn("status", "--name", "lr-sweep", "--json").stdout)
    assert status["failed"] == 4, status


def test_failed_pods_are_reported_by_collect(tmp_path, saturn, s3, fake_kube):
    path = write_sweep(
        tmp_path, executor=kube_executor(), results=s3_results(s3), nprocs=2, batch_size=2
    )
    assert saturn("run", str(path), "-q", "--detach").returncode == 0
    job = fake_kube.only_job()
    name = job["metadata"]["name"]
    job["status"] = {
        "failed": 2,
        "failedIndexes": "0-1",
        "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                        "message": "Job has reached the specified backoff limit"}],
    }  # fmt: skip
    fake_kube.pods.append(
        {
            "metadata": {
                "name": f"{name}-1-abcde",
                "labels": {"batch.kubernetes.io/job-name": name},
                "annotations": {"batch.kubernetes.io/job-completion-index": "1"},
            },
            "status": {
                "phase": "Failed",
                "containerStatuses": [
                    {
                        "name": "saturn", "image": "i", "imageID": "", "ready": False,
                        "restartCount": 0,
                        "state": {"terminated": {"exitCode": 2, "reason": "Error"}},
                    }
                ],
            },
        }
    )  # fmt: skip
    collected = saturn("collect", "--name", "lr-sweep", "-q")
    assert collected.returncode == 1
    assert f"batch 1: pod {name}-1-abcde failed: Error (exit code 2)" in collected.stderr
    assert "BackoffLimitExceeded" in collected.stderr
    assert "4 tasks have no status" in collected.stderr
    selector = next(r for r in fake_kube.requests if r.path.endswith("/pods")).query
    assert selector == {"labelSelector": [f"batch.kubernetes.io/job-name={name}"]}


def test_api_errors_are_one_line_and_record_nothing(tmp_path, saturn, s3, fake_kube):
    fake_kube.forbid = True
    path = write_sweep(
        tmp_path, executor=kube_executor(), results=s3_results(s3), nprocs=2, batch_size=2
    )
    done = saturn("run", str(path), "-q")
    assert done.returncode == 2
    assert done.stderr.startswith("saturn: error: Kubernetes: create Secret saturn-lr-sweep-")
    assert done.stderr.rstrip().endswith(f"in namespace {NAMESPACE}: 403 Forbidden")
    assert len(done.stderr.splitlines()) == 1, done.stderr
    unknown = saturn("status", "--name", "lr-sweep")
    assert unknown.returncode == 2  # the name is still free


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_pods": 0}, "$.executor.max_pods: expected `int` >= 1"),
        (
            {"backoff_limit_per_index": -1},
            "$.executor.backoff_limit_per_index: expected `int` >= 0",
        ),
        ({"ttl_seconds_after_finished": -5}, "$.executor.ttl_seconds_after_finished: expected"),
    ],
)
def test_out_of_range_numbers_are_one_line(tmp_path, saturn, fields, message):
    path = write_sweep(tmp_path, executor=kube_executor(**fields), results=s3_results("s3://b"))
    done = saturn("run", str(path), "--dry-run")
    assert done.returncode == 2
    assert message in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stdout == ""


def test_bad_setups_are_one_line(tmp_path, saturn, s3, monkeypatch):
    local = write_sweep(tmp_path, executor=kube_executor())
    done = saturn("run", str(local), "-q")
    assert done.returncode == 2
    assert "$.results.class_spec: KubernetesExecutor needs results on S3" in done.stderr
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    path = write_sweep(tmp_path, executor=kube_executor(), results=s3_results(s3))
    done = saturn("run", str(path), "-q")
    assert done.returncode == 2
    assert "$.executor.kubeconfig: no usable Kubernetes configuration" in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    missing = saturn_without("kubernetes_asyncio", "run", str(path), "-q")
    assert "KubernetesExecutor needs the extra: pip install 'saturn_async[kubernetes]'" in (
        missing.stderr
    )
    assert SEED_TASKS  # the sweep above is the seed's


def test_collect_reads_the_kubeconfig_once(tmp_path, saturn, s3, fake_kube):
    # One ApiClient for the executor's life: following polls the Job with the
    # configuration read at the start (before, every poll read the kubeconfig again and
    # opened a new client, so a kubeconfig rotated meanwhile broke collect).
    path = write_sweep(
        tmp_path, executor=kube_executor(), results=s3_results(s3), nprocs=2, batch_size=2
    )
    assert saturn("run", str(path), "-q", "--detach").returncode == 0
    job = fake_kube.only_job()
    read_job = ("GET", f"{JOBS}/{job['metadata']['name']}")
    with saturn_in_background("collect", "--name", "lr-sweep", "-q") as collect:
        wait_for(lambda: read_job in fake_kube.calls() or collect.poll() is not None)
        Path(os.environ["KUBECONFIG"]).unlink()
        job["status"] = {
            "failed": 2,
            "failedIndexes": "0-1",
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                            "message": "Job has reached the specified backoff limit"}],
        }  # fmt: skip
        _, stderr = collect.communicate(timeout=120)
    assert collect.returncode == 1, stderr
    assert "Kubernetes configuration" not in stderr
    assert "BackoffLimitExceeded" in stderr
    assert fake_kube.calls().count(read_job) >= 2
