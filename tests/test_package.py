"""The package surface: public API, entry points, version."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import anyio
import pytest

import saturn_async
from saturn_async import Batch, Run, load_batch_file, run_batches


def test_public_api_is_pinned() -> None:
    assert sorted(saturn_async.__all__) == [
        "Batch",
        "BatchSummary",
        "InputError",
        "Run",
        "SaturnError",
        "__version__",
        "load_batch_file",
        "run_batches",
    ]


@pytest.mark.parametrize("name", ["saturn", "sc"])
def test_console_scripts(name: str) -> None:
    exe = shutil.which(name, path=str(Path(sys.executable).parent))
    assert exe, f"{name} is not installed next to {sys.executable}"
    result = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"saturn_async, version {saturn_async.__version__}"


def test_python_dash_m_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "saturn_async", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("split", "batch", "status"):
        assert command in result.stdout


def test_quiet_json_batch_imports_only_what_it_uses(tmp_path: Path) -> None:
    # Start-up is part of every short batch's wall time: the CLI loads commands on use.
    job = tmp_path / "job.json"
    job.write_text(
        f'{{"nprocs": 1, "remote_output_path": "{tmp_path}/out", "runs": [{{"cmd": "true"}}]}}'
    )
    script = (
        "import sys\n"
        "from saturn_async.cli import cli\n"
        "try:\n"
        f"    cli(['batch', {str(job)!r}, '-q'])\n"
        "finally:\n"
        "    print(' '.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    loaded = set(result.stdout.split())
    assert "saturn_async.supervisor.supervisor" in loaded
    assert (tmp_path / "out" / "0" / "status_code").read_text() == "0\n"
    for unused in ("rich", "yaml", "saturn_async.daemon.service", "saturn_async.cli.run"):
        assert unused not in loaded


def test_library_api_runs_a_batch(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(
        f"nprocs: 2\nremote_output_path: {tmp_path}/out\nruns:\n- cmd: 'true'\n- cmd: exit 2\n"
    )
    batch = load_batch_file(job)
    assert isinstance(batch, Batch) and all(isinstance(r, Run) for r in batch.runs)
    summary = anyio.run(run_batches, [batch])
    assert (summary.succeeded, summary.failed, summary.exit_code) == (1, 1, 1)


ROOT = Path(__file__).resolve().parent.parent


def test_all_extra_has_every_runtime_backend() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    runtime = set(extras) - {"all", "test", "test-core"}
    assert runtime == {"fast-yaml", "s3", "dask", "ray", "kubernetes", "report"}
    assert extras["all"] == [f"saturn_async[{','.join(sorted(runtime, key=list(extras).index))}]"]
    assert "saturn_async[all,test-core]" in extras["test"]


def test_python_312_and_313_are_tested() -> None:
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    assert {"py", "py312", "py313"} <= {e.strip() for e in tox["tox"]["env_list"].split(",")}
    classifiers = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["classifiers"]
    for version in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    script = (ROOT / "scripts" / "test").read_text()
    assert "for version in 3.12 3.13; do" in script
