"""Hostile ``saturn split``: it replaces and removes only what an earlier split wrote.

Each case prepares the directory around the split, runs it, and checks the exit code,
the message and, by snapshot, that nothing changed outside the files it may write.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hostile import changes_outside, snapshot

RECIPE = "type: job\nspec:\n  name: backfill\n  command: python old.py\n"
OURS = ["c/0.json", "c/recipe.yaml", "c/.saturn-split"]


def job(runs: int) -> str:
    return json.dumps({"nprocs": 1, "remote_output_path": "out", "runs": [{"cmd": "true"}] * runs})


def user_file(
    name: str, text: str = "the user's own\n"
) -> Callable[[Path, Callable[..., object]], None]:
    def make(root: Path, saturn: Callable[..., object]) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    return make


def user_dir(name: str) -> Callable[[Path, Callable[..., object]], None]:
    def make(root: Path, saturn: Callable[..., object]) -> None:
        (root / name).mkdir(parents=True)

    return make


def planted_tmp_link(root: Path, saturn: Callable[..., object]) -> None:
    (root / "victim").write_text("precious\n")
    (root / "c").mkdir()
    os.symlink("../victim", root / "c" / "sync-workspace.tar.gz.tmp")


def earlier_split_then_user_file(root: Path, saturn: Callable[..., object]) -> None:
    (root / "big.json").write_text(job(3))
    assert saturn("split", "recipe.yaml", "big.json", "c", "--batch-size", "1").returncode == 0
    (root / "c" / "9.json").write_text(job(1))


@dataclass
class Case:
    name: str
    setup: list[Callable[[Path, Callable[..., object]], None]]
    args: list[str]
    code: int
    message: str
    owned: list[str] = field(default_factory=list)


CASES = [
    Case(
        "job file is OUTDIR/0.json",
        [user_file("c/0.json", job(1))],
        ["c/0.json", "c"],
        2,
        "c/0.json: is the job file being split; choose another OUTDIR",
    ),
    Case(
        "job file is OUTDIR/0.json, even with --overwrite",
        [user_file("c/0.json", job(1))],
        ["c/0.json", "c", "--overwrite"],
        2,
        "c/0.json: is the job file being split",
    ),
    Case(
        "job file is a higher-numbered OUTDIR/7.json: kept",
        [user_file("c/7.json", job(1))],
        ["c/7.json", "c"],
        0,
        "wrote 1 batch file of",
        OURS,
    ),
    Case(
        "other N.json files in OUTDIR: kept",
        [user_file("c/5.json"), user_file("c/12.json")],
        ["job.json", "c"],
        0,
        "wrote 1 batch file of",
        OURS,
    ),
    Case(
        "a file split did not write where a batch file goes",
        [user_file("c/0.json")],
        ["job.json", "c"],
        2,
        "c/0.json: exists and was not written by saturn split; "
        "move it away or pass --overwrite to replace it",
    ),
    Case(
        "--overwrite replaces it",
        [user_file("c/0.json")],
        ["job.json", "c", "--overwrite"],
        0,
        "wrote 1 batch file of",
        OURS,
    ),
    Case(
        "a recipe.yaml split did not write",
        [user_file("c/recipe.yaml")],
        ["job.json", "c"],
        2,
        "c/recipe.yaml: exists and was not written by saturn split",
    ),
    Case(
        "a --sync tarball split did not write",
        [user_dir("workspace"), user_file("c/sync-workspace.tar.gz")],
        ["job.json", "c", "--sync", "workspace"],
        2,
        "c/sync-workspace.tar.gz: exists and was not written by saturn split",
    ),
    Case(
        "a directory where the second batch file goes: checked before the first is written",
        [user_dir("c/1.json")],
        ["job.json", "c", "--batch-size", "1"],
        2,
        "c/1.json: exists and is not a regular file",
    ),
    Case(
        "a link planted at the tarball's old temporary name is not written through",
        [user_dir("workspace"), planted_tmp_link],
        ["job.json", "c", "--sync", "workspace"],
        0,
        "wrote 1 batch file of",
        [*OURS, "c/sync-workspace.tar.gz"],
    ),
    Case(
        "a re-split removes its own stale batch files, not the user's 9.json",
        [earlier_split_then_user_file],
        ["job.json", "c"],
        0,
        "wrote 1 batch file of",
        [*OURS, "c/1.json", "c/2.json"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_split_never_replaces_or_removes_what_it_did_not_write(
    case: Case, tmp_path: Path, saturn: Callable[..., object]
) -> None:
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    (tmp_path / "job.json").write_text(job(2))
    for step in case.setup:
        step(tmp_path, saturn)
    before = snapshot(tmp_path)

    result = saturn("split", "recipe.yaml", *case.args)

    assert result.returncode == case.code, result.stderr  # type: ignore[attr-defined]
    if case.code == 2:
        assert result.stderr.count("\n") == 1, result.stderr  # type: ignore[attr-defined]
        assert case.message in result.stderr  # type: ignore[attr-defined]
    else:
        assert case.message in result.stdout  # type: ignore[attr-defined]
    assert changes_outside(before, snapshot(tmp_path), case.owned) == []


def test_a_second_split_may_replace_what_the_first_wrote(tmp_path: Path, saturn) -> None:
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    (tmp_path / "job.json").write_text(job(2))
    (tmp_path / "workspace").mkdir()
    args = ["recipe.yaml", "job.json", "c", "--sync", "workspace"]
    assert saturn("split", *args).returncode == 0
    result = saturn("split", *args)
    assert result.returncode == 0, result.stderr
    recorded = json.loads((tmp_path / "c" / ".saturn-split").read_text())
    assert recorded == ["0.json", "recipe.yaml", "sync-workspace.tar.gz"]
    assert (tmp_path / "c" / "0.json").stat().st_mode & 0o777 == 0o600  # it holds env


def test_an_s3_job_file_splits_into_an_existing_outdir(
    s3: str, tmp_path: Path, saturn: Callable[..., object]
) -> None:
    import subprocess
    import sys

    (tmp_path / "recipe.yaml").write_text(RECIPE)
    (tmp_path / "job.json").write_text(job(2))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    copy = [sys.executable, "-m", "awscli", "s3", "cp", "job.json", f"{s3}/job.json"]
    subprocess.run(copy, cwd=tmp_path, check=True, capture_output=True)
    result = saturn("split", "recipe.yaml", f"{s3}/job.json", "c")
    assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
    assert (tmp_path / "c" / "0.json").exists()
    assert (tmp_path / "c" / "notes.txt").read_text() == "mine"


def test_a_directory_under_a_recorded_name_is_neither_removed_nor_written(
    tmp_path: Path, saturn: Callable[..., object]
) -> None:
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    (tmp_path / "job.json").write_text(job(3))
    first = saturn("split", "--batch-size", "1", "recipe.yaml", "job.json", "o")
    assert first.returncode == 0, first.stderr  # type: ignore[attr-defined]
    (tmp_path / "o" / "2.json").unlink()
    (tmp_path / "o" / "2.json").mkdir()
    (tmp_path / "o" / "2.json" / "keep").write_text("mine")
    result = saturn("split", "--batch-size", "3", "recipe.yaml", "job.json", "o")
    assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
    assert (tmp_path / "o" / "2.json" / "keep").read_text() == "mine"
    assert not (tmp_path / "o" / "1.json").exists()
    assert "2.json" not in json.loads((tmp_path / "o" / ".saturn-split").read_text())
