"""Shared fixtures: run the real CLI in a subprocess, write job files, wait on conditions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

CLI = [sys.executable, "-m", "saturn_async"]


def wait_for(
    condition: Callable[[], object], timeout: float = 20.0, what: str = "condition"
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :][:1] != b"Z"


@pytest.fixture
def saturn(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``saturn ARGS...`` in ``tmp_path`` and return the completed process."""

    def run(*args: str, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args],
            cwd=kwargs.pop("cwd", tmp_path),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )

    return run


@pytest.fixture
def write_job(tmp_path: Path) -> Callable[..., Path]:
    """Write a JSON job/batch file; runs may be commands or dicts."""

    def write(
        runs: list[str | dict[str, Any]],
        name: str = "job.json",
        nprocs: int = 2,
        output: str | None = None,
        **fields: Any,
    ) -> Path:
        doc: dict[str, Any] = {
            "nprocs": nprocs,
            "remote_output_path": output or str(tmp_path / "out"),
            "runs": [r if isinstance(r, dict) else {"cmd": r} for r in runs],
            **fields,
        }
        path = tmp_path / name
        path.write_text(json.dumps(doc))
        return path

    return write


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("SATURN_RUN_LOCAL_RANK", raising=False)
    os.environ.pop("PYTHONWARNINGS", None)
