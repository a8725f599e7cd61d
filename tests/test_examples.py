"""The files in examples/ stay runnable: the demo relies on them."""

from __future__ import annotations

import shutil
from pathlib import Path

from saturn_async.spec.paths import RESERVED
from sweeps import events_of

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_example_sweep_runs_with_saturn_run(tmp_path, saturn):
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    done = saturn("run", "examples/run.yaml", "-q")
    assert done.returncode == 1, done.stderr  # lr-0.95 diverges on purpose
    results = tmp_path / "results"
    tasks = [d for d in results.iterdir() if d.is_dir() and d.name != RESERVED]  # summaries
    statuses = {d.name: (d / "status").read_text() for d in tasks}
    assert statuses == {
        "lr-0.5": "success\n", "lr-0.6": "success\n", "lr-0.7": "success\n",
        "lr-0.8": "success\n", "lr-0.95": "failure\n",
    }  # fmt: skip
    assert (results / "lr-0.95" / "log").read_text().endswith("lr=0.95 diverged\n")
    assert (results / "lr-0.5" / "results" / "metrics.json").exists()
    assert events_of(results / "lr-0.5")[-1]["type"] == "complete"


def test_example_ray_sweep_runs_on_a_local_ray(tmp_path, saturn):
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    done = saturn("run", "examples/run-ray.yaml", "-q", timeout=120)
    assert done.returncode == 1, done.stderr  # lr-0.95 diverges on purpose
    results = tmp_path / "results-ray"
    assert (results / "lr-0.5" / "status").read_text() == "success\n"
    assert (results / "lr-0.95" / "status").read_text() == "failure\n"


def test_example_kubernetes_sweep_prints_valid_manifests(tmp_path, saturn):
    import kubernetes_validate
    import yaml

    shutil.copytree(EXAMPLES, tmp_path / "examples")
    done = saturn("run", "examples/run-kubernetes.yaml", "--dry-run")
    assert done.returncode == 0, done.stderr
    objects = list(yaml.safe_load_all(done.stdout))
    assert [o["kind"] for o in objects] == ["Secret", "Job"]  # batch files hold env
    for obj in objects:
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
    assert objects[1]["spec"]["completions"] == 2
