"""Hostile suite, filesystem safety of spawning and writing (docs/security.md).

Runs that replace their siblings' directories (or a parent of one) with links, plant
links under the names of saturn's temporary files, or cannot be spawned at all; staging
directories another user prepared. Each case runs the real ``saturn batch`` (or a real
daemon), then compares snapshots of the directory around it: nothing outside the run's
own directories may change.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import CLI, wait_for
from daemons import Daemon
from hostile import changes_outside, snapshot
from saturn_async.storage.layout import decode_events

Saturn = Callable[..., subprocess.CompletedProcess[str]]
OUT = "out"
VICTIM = "victim"
"""A directory of the user's, outside every run's outputs, that must stay as it is."""


def plant_victim(tmp_path: Path) -> Path:
    """The victim directory, and the batch's output root (so a snapshot has it)."""
    (tmp_path / OUT).mkdir()
    victim = tmp_path / VICTIM
    victim.mkdir()
    (victim / "keep").write_text("precious\n")
    return victim


def write_batch(tmp_path: Path, root: str, runs: list[dict[str, Any]], nprocs: int) -> Path:
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"nprocs": nprocs, "remote_output_path": root, "runs": runs}))
    return job


def events(run_dir: Path) -> list[Any]:
    return decode_events((run_dir / "events").read_bytes())


# --- local outputs: links planted by runs ---------------------------------------------


@dataclass(frozen=True)
class LocalCase:
    """Runs (``{out}``, ``{victim}``, ``{tmp}`` are filled in), what saturn must say and
    do, and what the runs own (paths relative to the test's directory)."""

    id: str
    runs: list[dict[str, str]]
    nprocs: int
    exit_code: int
    message: str | None
    owned: list[str]
    check: Callable[[Path], None] = field(default=lambda tmp: None)


def _later_runs_still_run(tmp: Path, name: str) -> None:
    assert (tmp / OUT / name / "stdout").read_text() == "third\n"
    assert (tmp / OUT / name / "status_code").read_text() == "0\n"


def _sibling_stays_in_its_directory(tmp: Path) -> None:
    moved = tmp / "moved"
    assert (moved / "stdout").read_text() == "sibling\n"
    assert (moved / "status_code").read_text() == "0\n"
    assert [e.type for e in events(moved)] == ["submitted", "started", "complete"]


def _planted_links_are_left_alone(tmp: Path) -> None:
    run = tmp / OUT / "0"
    assert (run / "status_code").read_text() == "0\n"
    assert not (run / "status_code").is_symlink() and not (run / "events").is_symlink()
    planted = sorted(p.name for p in run.iterdir() if p.is_symlink())
    assert [name.split(".tmp-")[0] for name in planted] == ["events", "status_code"]


AWAIT_SIBLING = "while [ ! -e {out}/1/stdout ]; do sleep 0.01; done"
AWAIT_GATE = "while [ ! -e {tmp}/gate ]; do sleep 0.01; done"
REPLACE_SIBLING = "mv {out}/1 {tmp}/moved; ln -s {victim} {out}/1"
# The old temporary name was "<name>.tmp-<supervisor pid>"; the run's parent is saturn.
PLANT_TMP = 'ln -s {victim}/keep "$SATURN_RUN_REMOTE_OUTPUT_PATH/$f.tmp-$PPID"'

LOCAL_CASES = [
    LocalCase(
        "sibling-dir-replaced-by-a-link-before-it-starts",
        [
            {"cmd": 'rm -rf "$SATURN_RUN_REMOTE_OUTPUT_PATH/../1"; ln -s {victim} {out}/1'},
            {"cmd": "echo sibling"},
            {"cmd": "echo third"},
        ],
        nprocs=1,
        exit_code=1,
        message="/1: [Errno 40] is a symbolic link, which saturn does not follow",
        owned=[f"{OUT}/0", f"{OUT}/1", f"{OUT}/2"],
        check=lambda tmp: _later_runs_still_run(tmp, "2"),
    ),
    LocalCase(
        "parent-of-a-sibling-dir-replaced-by-a-link",
        [
            {"cmd": "ln -s {victim} {out}/b", "remote_output_path": "{out}/a"},
            {"cmd": "echo sibling", "remote_output_path": "{out}/b/c"},
        ],
        nprocs=1,
        exit_code=1,
        message="b/c: [Errno 40] is a symbolic link, which saturn does not follow: 'b'",
        owned=[f"{OUT}/a", f"{OUT}/b"],
    ),
    LocalCase(
        "sibling-dir-replaced-by-a-link-while-it-runs",
        [
            {"cmd": f"{AWAIT_SIBLING}; {REPLACE_SIBLING}; touch {{tmp}}/gate"},
            {"cmd": f"{AWAIT_GATE}; echo sibling"},
        ],
        nprocs=2,
        exit_code=0,
        message=None,
        owned=[f"{OUT}/0", f"{OUT}/1", "moved", "gate"],
        check=_sibling_stays_in_its_directory,
    ),
    LocalCase(
        "links-planted-under-the-temporary-names-of-final-files",
        [
            {"cmd": f"for f in status_code events; do {PLANT_TMP}; done"},
        ],
        nprocs=1,
        exit_code=0,
        message=None,
        owned=[f"{OUT}/0"],
        check=_planted_links_are_left_alone,
    ),
]


def _fill(value: str, tmp: Path) -> str:
    return value.format(out=tmp / OUT, victim=tmp / VICTIM, tmp=tmp)


@pytest.mark.parametrize("case", LOCAL_CASES, ids=[c.id for c in LOCAL_CASES])
def test_runs_cannot_redirect_what_saturn_writes(
    case: LocalCase, tmp_path: Path, saturn: Saturn
) -> None:
    plant_victim(tmp_path)
    runs = [{k: _fill(v, tmp_path) for k, v in run.items()} for run in case.runs]
    job = write_batch(tmp_path, str(tmp_path / OUT), runs, case.nprocs)
    before = snapshot(tmp_path)
    result = saturn("batch", str(job), "-q")
    assert result.returncode == case.exit_code, result.stderr
    assert "Traceback" not in result.stderr
    if case.message is not None:
        assert case.message in result.stderr
    assert changes_outside(before, snapshot(tmp_path), case.owned) == []
    case.check(tmp_path)


# --- runs that cannot be spawned --------------------------------------------------------

# An environment entry with an empty name, which Python keeps in os.environ but which
# posix_spawn refuses (ValueError): every run saturn spawns from this environment fails.
EXEC_WITH_EMPTY_NAME = """
import ctypes, os, sys
args = [a.encode() for a in sys.argv[1:]]
env = [f"{k}={v}".encode() for k, v in os.environ.items()] + [b"=empty-name"]
argv = (ctypes.c_char_p * (len(args) + 1))(*args, None)
envp = (ctypes.c_char_p * (len(env) + 1))(*env, None)
ctypes.CDLL(None).execve(args[0], argv, envp)
"""


def test_a_run_that_cannot_be_spawned_ends_that_run_only(tmp_path: Path) -> None:
    """posix_spawn refusing the environment (ValueError) ends each run with 127."""
    runs = [{"cmd": "true"}, {"cmd": "true"}, {"cmd": "true"}]
    job = write_batch(tmp_path, str(tmp_path / OUT), runs, nprocs=1)
    before = snapshot(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", EXEC_WITH_EMPTY_NAME, sys.executable, *CLI[1:], "batch", str(job)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    for index in range(len(runs)):
        run = tmp_path / OUT / str(index)
        assert (run / "status_code").read_text() == "127\n"
        last = events(run)[-1]
        assert last.type == "failed" and last.error == "illegal environment variable name"
    assert changes_outside(before, snapshot(tmp_path), [OUT]) == []


# --- staging directories (S3 outputs) ---------------------------------------------------


def _staged_name(location: str) -> str:
    return hashlib.sha1(location.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class StagingCase:
    """``prepare(tmp, staging, s3)`` sets up the staging directory ``tmp/path``; the
    batch runs with ``--staging-dir`` (or, when ``flag`` is False, with the default
    under $TMPDIR, which ``path`` then is)."""

    id: str
    prepare: Callable[[Path, Path, str], None]
    message: str
    path: str = "staging"
    flag: bool = True
    needs_root: bool = False


def _world_writable_with_a_planted_link(tmp: Path, staging: Path, s3: str) -> None:
    staging.mkdir()
    staging.chmod(0o777)
    (staging / _staged_name(f"{s3}/{OUT}/0")).symlink_to(tmp / VICTIM)


def _owned_by_nobody(tmp: Path, staging: Path, s3: str) -> None:
    staging.mkdir(mode=0o700)
    os.chown(staging, 65534, 65534)


def _a_link_to_a_private_directory(tmp: Path, staging: Path, s3: str) -> None:
    (tmp / "private").mkdir(mode=0o700)
    staging.symlink_to(tmp / "private")


def _under_a_file(tmp: Path, staging: Path, s3: str) -> None:
    staging.parent.write_text("a file\n")


def _default_readable_by_others(tmp: Path, staging: Path, s3: str) -> None:
    staging.mkdir(parents=True)
    staging.chmod(0o755)


STAGING_CASES = [
    StagingCase(
        "world-writable-with-a-planted-link",
        _world_writable_with_a_planted_link,
        "has mode 0777; group and others must have no access; refusing it",
    ),
    StagingCase(
        "owned-by-another-user",
        _owned_by_nobody,
        "is owned by uid 65534, not by this user",
        needs_root=True,
    ),
    StagingCase(
        "a-link-to-a-private-directory",
        _a_link_to_a_private_directory,
        "is a symbolic link, which saturn does not follow; refusing it",
    ),
    StagingCase(
        "under-a-file",
        _under_a_file,
        "cannot create it as a staging directory: Not a directory",
        path="file/staging",
    ),
    StagingCase(
        "default-readable-by-others",
        _default_readable_by_others,
        "has mode 0755",
        path=f"tmpdir/saturn_async-staging-{os.getuid()}",
        flag=False,
    ),
]


def _staging_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SATURN_STAGING_DIR"}
    return {**env, "TMPDIR": str(tmp / "tmpdir")}


@pytest.mark.parametrize("case", STAGING_CASES, ids=[c.id for c in STAGING_CASES])
def test_a_staging_directory_not_ours_alone_is_refused_before_anything_starts(
    case: StagingCase, s3: str, tmp_path: Path, saturn: Saturn
) -> None:
    if case.needs_root and os.getuid() != 0:
        pytest.skip("chown to another user needs root")
    plant_victim(tmp_path)
    staging = tmp_path / case.path
    case.prepare(tmp_path, staging, s3)
    runs = [{"cmd": f"touch {tmp_path}/ran; echo staged"}]
    job = write_batch(tmp_path, f"{s3}/{OUT}", runs, nprocs=1)
    flags = ["--staging-dir", str(staging)] if case.flag else []
    before = snapshot(tmp_path)
    result = saturn("batch", str(job), "-q", *flags, env=_staging_env(tmp_path))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"saturn: error: {staging}: ") and case.message in line
    assert changes_outside(before, snapshot(tmp_path), []) == []


def test_staging_directories_are_made_private(s3: str, tmp_path: Path, saturn: Saturn) -> None:
    """A new staging directory, and every run's directory in it, is 0700."""
    staging = tmp_path / "tmpdir" / f"saturn_async-staging-{os.getuid()}"
    (tmp_path / "tmpdir").mkdir()
    mode_of_own_dir = 'stat -c %a "$(dirname "$SATURN_RUN_LOCAL_RESULTS_DIR")"'
    mode_of_staging = f'stat -c %a "{staging}"'
    runs = [{"cmd": f"{{ {mode_of_own_dir}; {mode_of_staging}; }} > {tmp_path}/mode"}]
    job = write_batch(tmp_path, f"{s3}/{OUT}", runs, nprocs=1)
    before = snapshot(tmp_path)
    result = saturn("batch", str(job), "-q", env=_staging_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "mode").read_text() == "700\n700\n"
    assert stat.S_IMODE(staging.stat().st_mode) == 0o700
    assert changes_outside(before, snapshot(tmp_path), ["mode", "tmpdir"]) == []


# --- the daemon -------------------------------------------------------------------------


def test_the_daemon_survives_a_run_whose_directory_was_replaced(
    daemon: Daemon, tmp_path: Path, saturn: Saturn
) -> None:
    victim = plant_victim(tmp_path)
    runs = [
        {"cmd": f"ln -s {victim} {tmp_path / OUT}/1"},
        {"cmd": "echo sibling"},
        {"cmd": "echo third"},
    ]
    job = write_batch(tmp_path, str(tmp_path / OUT), runs, nprocs=1)
    daemon.start("--nprocs", "1")
    before = snapshot(tmp_path)
    assert saturn("submit", str(job), *daemon.address).returncode == 0

    def done() -> bool:
        batches = daemon.ps().batches
        return not batches or batches[0].queued + batches[0].running == 0

    wait_for(done, what="the batch")
    assert (tmp_path / OUT / "2" / "status_code").read_text() == "0\n"
    owned = [f"{OUT}/0", f"{OUT}/1", f"{OUT}/2", "state", "daemon-0.log"]
    assert changes_outside(before, snapshot(tmp_path), owned) == []
    assert "is a symbolic link, which saturn does not follow" in daemon.log()
    second = write_batch(tmp_path, str(tmp_path / "again"), [{"cmd": "true"}], nprocs=1)
    assert saturn("submit", str(second), *daemon.address).returncode == 0
    wait_for((tmp_path / "again" / "0" / "status_code").exists, what="the next batch")


def test_the_daemon_refuses_outputs_staged_in_a_directory_not_ours_alone(
    daemon: Daemon, s3: str, tmp_path: Path, saturn: Saturn
) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    staging.chmod(0o777)
    daemon.start("--nprocs", "1", "--staging-dir", str(staging))
    job = write_batch(tmp_path, f"{s3}/{OUT}", [{"cmd": f"touch {tmp_path}/ran"}], nprocs=1)
    result = saturn("submit", str(job), *daemon.address)
    assert result.returncode == 2
    assert f"{staging}: has mode 0777" in result.stderr
    assert not (tmp_path / "ran").exists()
    assert daemon.answers()
