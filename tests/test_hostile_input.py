"""Hostile input files (issue 15, categories 5 and 6): bounded, and refused in one line.

Each case is an input file, the exit code and a fragment of the one-line error. It runs
against every command that reads such a file (``batch``, ``split``, ``submit`` to a real
daemon; ``run`` for sweep files), and a snapshot of the case's directory before and
after proves that a refused file changed nothing there (an accepted one wrote only its
outputs).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import CLI, wait_for
from daemons import Daemon
from hostile import changes_outside, snapshot

Saturn = Callable[..., subprocess.CompletedProcess[str]]
BOM = b"\xef\xbb\xbf"
DEEP = 100_000


@dataclass(frozen=True)
class Case:
    file: str
    """The input's name in the case directory, or an absolute path read as it is."""
    content: bytes | None
    code: int
    fragment: str
    """Expected in the one line on stderr, after ``FILE: ``; empty for exit code 0."""
    flags: tuple[str, ...] = ()


def job(runs: list[dict[str, Any]] | None = None, **fields: Any) -> bytes:
    doc = {"nprocs": 1, "remote_output_path": "out", "runs": runs or [{"cmd": "true"}], **fields}
    return json.dumps(doc).encode()


def sweep(tasks: list[dict[str, Any]] | None = None, **fields: Any) -> bytes:
    doc = {
        "name": "hostile",
        "tasks": tasks or [{"name": "t", "command": "true"}],
        "executor": {"class_spec": "LocalExecutor"},
        "results": {"class_spec": "LocalDir", "directory": "results"},
        **fields,
    }
    return json.dumps(doc).encode()


def run(**fields: Any) -> list[dict[str, Any]]:
    return [{"cmd": "touch ran", **fields}]


YAML_JOB = b"nprocs: 1\nremote_output_path: out\nruns:\n- cmd: 'true'\n"
YAML_SWEEP = (
    b"name: hostile\ntasks:\n- {name: t, command: 'true'}\n"
    b"executor: {class_spec: LocalExecutor}\n"
    b"results: {class_spec: LocalDir, directory: results}\n"
)
LIMIT_HINT = "over the input size limit of 1,024 bytes"

BATCH_CASES: dict[str, Case] = {
    # Category 6: what crashed, or failed only at run time, is refused at resolve time.
    "nul_in_root": Case(
        "job.json", job(remote_output_path="out/a\0b"), 2, "$.remote_output_path: holds a NUL"
    ),
    "nul_in_run_path": Case(
        "job.json",
        job(run(remote_output_path="out/a\0")),
        2,
        "$.runs[0].remote_output_path: holds a NUL byte",
    ),
    "nul_in_local_results_dir": Case(
        "job.json",
        job(run(local_results_dir="res\0")),
        2,
        "$.runs[0].local_results_dir: holds a NUL byte",
    ),
    "name_over_name_max": Case(
        "job.json",
        job(run(remote_output_path="out/" + "n" * 256)),
        2,
        "$.runs[0].remote_output_path: has a name of 256 bytes",
    ),
    "path_over_path_max": Case(
        "job.json",
        job(remote_output_path="out/" + "/".join(["d" * 200] * 21)),
        2,
        "a local path may be at most 4,031",
    ),
    "s3_key_over_1024_bytes": Case(
        "job.json",
        job(remote_output_path="s3://bucket/" + "k/" * 500),
        2,
        "$.remote_output_path: is 999 bytes long; an S3 key may be at most 960",
    ),
    "nul_in_cmd": Case("job.json", job(run(cmd="a\0b")), 2, "$.runs[0].cmd: holds a NUL byte"),
    "cmd_of_2_mb": Case(
        "job.json", job(run(cmd="x" * 2_000_000)), 2, "$.runs[0].cmd: is 2,000,000 bytes"
    ),
    "env_name_with_equals": Case(
        "job.json",
        job(run(env={"A=B": "1"})),
        2,
        "$.runs[0].env: environment variable name 'A=B' holds '='",
    ),
    "env_name_empty": Case(
        "job.json", job(env={"": "1"}), 2, "$.env: an environment variable's name is empty"
    ),
    "env_value_with_nul": Case(
        "job.json", job(run(env={"A": "x\0"})), 2, "$.runs[0].env.A: holds a NUL byte"
    ),
    "env_over_arg_max": Case(
        "job.json",
        job(run(env={f"V{i}": "v" * 100_000 for i in range(64)})),
        2,
        "$.runs[0]: cmd and env take",
    ),
    "duplicate_key_in_run": Case(
        "job.json",
        b'{"nprocs": 1, "remote_output_path": "out", "runs": [{"cmd": "a", "cmd": "touch ran"}]}',
        2,
        "$.runs[0].cmd: duplicate key",
    ),
    "duplicate_key_in_env": Case(
        "job.json",
        b'{"nprocs": 1, "remote_output_path": "out",'
        b' "runs": [{"cmd": "true", "env": {"A": "1", "A": "2"}}]}',
        2,
        "$.runs[0].env.A: duplicate key",
    ),
    "duplicate_top_level_key": Case(
        "job.json",
        b'{"nprocs": 1, "nprocs": 2, "remote_output_path": "out", "runs": [{"cmd": "true"}]}',
        2,
        "$.nprocs: duplicate key",
    ),
    "duplicate_key_next_to_a_null": Case(  # counts differ anyway: the slow path decides
        "job.json",
        b'{"nprocs": 1, "timeout": null, "remote_output_path": "out",'
        b' "runs": [{"cmd": "true"}, {"cmd": "true", "cmd": "x"}]}',
        2,
        "$.runs[1].cmd: duplicate key",
    ),
    "duplicate_key_behind_an_escaped_colon": Case(
        "job.json",
        b'{"nprocs": 1, "remote_output_path": "out",'
        b' "runs": [{"cmd": "echo \\u003a", "cmd": "true"}]}',
        2,
        "$.runs[0].cmd: duplicate key",
    ),
    "second_yaml_document": Case("job.yaml", YAML_JOB + b"---\nruns: []\n", 2, "malformed YAML"),
    "bom_json": Case("job.json", BOM + job(), 0, ""),
    # Category 5: bounded.
    "nprocs_over_pid_max_limit": Case(
        "job.json", job(nprocs=10**9), 2, "$.nprocs: expected `int` <= 4194304"
    ),
    "over_the_size_limit": Case(
        "job.json",
        job(run(cmd="x" * 2000)),
        2,
        "is 2,0",
        ("--max-input-size", "1K"),
    ),
    "endless_device": Case(
        "/dev/zero",
        None,
        2,
        "holds more than the input size limit of 65,536 bytes",
        ("--max-input-size", "64K"),
    ),
}

SWEEP_CASES: dict[str, Case] = {
    "task_name_with_nul": Case(
        "run.json",
        sweep([{"name": "a\0b", "command": "true"}]),
        2,
        "$.tasks[0].name: 'a\\x00b' cannot name a directory",
    ),
    "task_name_over_name_max": Case(
        "run.json",
        sweep([{"name": "t" * 256, "command": "true"}]),
        2,
        "cannot name a directory",
    ),
    "nul_in_results_directory": Case(
        "run.json",
        sweep(results={"class_spec": "LocalDir", "directory": "res\0"}),
        2,
        "$.results.directory: holds a NUL byte",
    ),
    "nul_in_command": Case(
        "run.json",
        sweep([{"name": "t", "command": "a\0b"}]),
        2,
        "$.tasks[0].command: holds a NUL byte",
    ),
    "command_of_2_mb": Case(
        "run.json",
        sweep([{"name": "t", "command": "true"}, {"name": "u", "command": "x" * 2_000_000}]),
        2,
        "$.tasks[1].command: is 2,000,000 bytes",
    ),
    "deep_executor_section": Case(
        "run.json",
        sweep(executor={"class_spec": "LocalExecutor"}).replace(
            b'"LocalExecutor"}',
            b'"LocalExecutor", "deep": ' + b"[" * DEEP + b"]" * DEEP + b"}",
        ),
        2,
        "nested too deeply",
    ),
    "duplicate_key_in_executor": Case(
        "run.json",
        sweep().replace(b'{"class_spec": "Local', b'{"class_spec": "x", "class_spec": "Local'),
        2,
        "$.executor.class_spec: duplicate key",
    ),
    "second_yaml_document": Case("run.yaml", YAML_SWEEP + b"---\ntasks: []\n", 2, "malformed YAML"),
    "bom_json": Case("run.json", BOM + sweep(), 0, ""),
    "over_the_size_limit": Case(
        "run.json", sweep(), 2, "over the input size limit of 64", ("--max-input-size", "64")
    ),
}


def command_line(command: str, case: Case, daemon: Daemon | None) -> list[str]:
    if command == "batch":
        return ["batch", "-q", *case.flags, case.file]
    if command == "split":
        return ["split", *case.flags, "recipe.yaml", case.file, "cmds"]
    if command == "submit":
        assert daemon is not None
        return ["submit", *daemon.address, *case.flags, case.file]
    return ["run", "-q", *case.flags, case.file]


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path_factory.mktemp("daemon"))
    daemon.start("--nprocs", "1")
    yield daemon
    daemon.close()


def check_case(
    case: Case, command: str, tmp_path: Path, saturn: Saturn, daemon: Daemon | None = None
) -> subprocess.CompletedProcess[str]:
    if case.content is not None:
        (tmp_path / case.file).write_bytes(case.content)
    (tmp_path / "recipe.yaml").write_text("spec: {command: old}\n")
    queued = len(daemon.ps().batches) if daemon else 0
    before = snapshot(tmp_path)
    result = saturn(*command_line(command, case, daemon), timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == case.code, result.stderr
    owned: list[str] = []
    if case.code == 0:
        owned = {"split": ["cmds"], "run": ["results", "state"]}.get(command, ["out"])
        if command == "submit":
            wait_for((tmp_path / "out/0/status_code").exists, 30, "the batch's run")
    else:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert f"{case.file}: " in lines[0] and case.fragment in lines[0], lines[0]
        assert daemon is None or len(daemon.ps().batches) == queued, "a refused file was queued"
    assert changes_outside(before, snapshot(tmp_path), owned) == []
    return result


@pytest.mark.parametrize("case", sorted(BATCH_CASES))
@pytest.mark.parametrize("command", ["batch", "split"])
def test_hostile_batch_file(case: str, command: str, tmp_path: Path, saturn: Saturn) -> None:
    check_case(BATCH_CASES[case], command, tmp_path, saturn)
    if BATCH_CASES[case].code == 0 and command == "batch":
        assert (tmp_path / "out/0/status_code").read_text() == "0\n"


@pytest.mark.parametrize("case", sorted(BATCH_CASES))
def test_hostile_batch_file_submitted(
    case: str, tmp_path: Path, saturn: Saturn, shared_daemon: Daemon
) -> None:
    check_case(BATCH_CASES[case], "submit", tmp_path, saturn, shared_daemon)


@pytest.mark.parametrize("case", sorted(SWEEP_CASES))
def test_hostile_sweep_file(case: str, tmp_path: Path, saturn: Saturn) -> None:
    check_case(SWEEP_CASES[case], "run", tmp_path, saturn)
    if SWEEP_CASES[case].code == 0:
        assert (tmp_path / "results/t/status").read_text() == "success\n"


def test_default_size_limit_refuses_a_file_over_1_gib_unread(
    tmp_path: Path, saturn: Saturn
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    sparse = inputs / "job.json"
    with sparse.open("wb") as f:
        f.truncate((1 << 30) + 1)  # a hole: no disk space, and never read
    before = snapshot(work)
    for env in ({}, {"SATURN_MAX_INPUT_SIZE": "512M"}):
        result = saturn("batch", str(sparse), cwd=work, env={**os.environ, **env})
        assert result.returncode == 2, result.stderr
        limit = "1,073,741,824" if not env else "536,870,912"
        assert result.stderr.strip().splitlines() == [
            f"saturn: error: {sparse}: is 1,073,741,825 bytes, over the input size limit of "
            f"{limit} bytes (raise it with --max-input-size or $SATURN_MAX_INPUT_SIZE)"
        ]
    assert changes_outside(before, snapshot(work), []) == []


def test_a_bad_size_is_a_usage_error(tmp_path: Path, saturn: Saturn) -> None:
    (tmp_path / "job.json").write_bytes(job())
    result = saturn("batch", "--max-input-size", "lots", "job.json")
    assert result.returncode == 2
    assert "'lots' is not a size" in result.stderr and "Traceback" not in result.stderr
    env = {**os.environ, "SATURN_MAX_INPUT_SIZE": "0"}
    result = saturn("batch", "job.json", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "saturn: error: SATURN_MAX_INPUT_SIZE: '0' is not a size (a positive number of bytes, "
        "or with K, M, G or T)"
    ]
    assert not (tmp_path / "out").exists()


def test_a_million_slots_for_one_run_start_one(tmp_path: Path) -> None:
    """nprocs 1,000,000 with one run: before, 54 s and 3.5 GB making a task per slot."""
    (tmp_path / "job.json").write_bytes(job(nprocs=1_000_000))
    proc = subprocess.Popen([*CLI, "batch", "-q", "job.json"], cwd=tmp_path)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0
    assert (tmp_path / "out/0/status_code").read_text() == "0\n"
    assert usage.ru_maxrss < 300 * 1024, f"{usage.ru_maxrss} KiB"


# --- two runs of one command that would share an output directory ----------------------

SHARED_OUTPUTS: dict[str, tuple[tuple[str, ...], str]] = {
    "the same file twice": (
        ("rr1.json", "rr1.json"),
        "rr1.json: names the same file as 'rr1.json'",
    ),
    "the same file spelled ./": (
        ("rr1.json", "./rr1.json"),
        "./rr1.json: names the same file as 'rr1.json'",
    ),
    "the same file through a symlink": (
        ("rr1.json", "link.json"),
        "link.json: names the same file as 'rr1.json'",
    ),
    "a root through a symlink": (
        ("rr1.json", "rr2.json"),
        "rr2.json: $.runs[0].remote_output_path: '{t}/RRl/0' is also the output path of "
        "$.runs[0] in rr1.json",
    ),
}


@pytest.mark.parametrize("case", sorted(SHARED_OUTPUTS))
@pytest.mark.parametrize("command", ["batch", "submit"])
def test_two_runs_sharing_an_output_directory_are_refused(
    case: str, command: str, tmp_path: Path, saturn: Saturn, shared_daemon: Daemon
) -> None:
    files, fragment = SHARED_OUTPUTS[case]
    (tmp_path / "RR").mkdir()
    (tmp_path / "RRl").symlink_to("RR")
    for name, root in [("rr1.json", "RR"), ("rr2.json", "RRl")]:
        batch = {"nprocs": 1, "remote_output_path": str(tmp_path / root), "runs": [{"cmd": "echo " + name}]}  # fmt: skip
        (tmp_path / name).write_text(json.dumps(batch))
    (tmp_path / "link.json").symlink_to("rr1.json")
    queued = len(shared_daemon.ps().batches)
    before = snapshot(tmp_path)
    flags = shared_daemon.address if command == "submit" else []
    result = saturn(command, *flags, *files)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment.format(t=tmp_path) in lines[0], result.stderr
    assert len(shared_daemon.ps().batches) == queued, "a refused file was queued"
    assert changes_outside(before, snapshot(tmp_path), []) == []
