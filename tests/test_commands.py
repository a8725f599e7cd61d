"""Command lists (``saturn batch --commands``) and the original client's command names."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest


def test_summarize_batch_is_status(tmp_path: Path, write_job, saturn) -> None:
    job = write_job(["true", "exit 3"], nprocs=1)
    assert saturn("batch", str(job), "-q").returncode == 1
    result = saturn("summarize-batch", str(job), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(saturn("status", str(job), "--json").stdout)
    assert "1 succeeded, 1 failed" in saturn("summarize-batch", str(job)).stdout


def test_batch_without_output_root_names_no_foreign_flag(tmp_path: Path, saturn) -> None:
    (tmp_path / "job.json").write_text('{"nprocs": 1, "runs": [{"cmd": "true"}]}')
    result = saturn("batch", "job.json")
    assert result.returncode == 2
    assert result.stderr == (
        "saturn: error: job.json: $.remote_output_path: required field is missing\n"
    )
    (tmp_path / "r.yaml").write_text("spec: {}\n")
    result = saturn("split", "r.yaml", "job.json", "c")
    assert result.returncode == 2
    assert "(or pass --remote-output-path)" in result.stderr


def _one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"saturn: error: {expected}\n"


def test_command_list_runs_each_line(tmp_path: Path, saturn) -> None:
    (tmp_path / "cmds.txt").write_text(
        "# a sweep\necho zero\n\n   \necho one; exit 3\r\n  # indented comment\necho two >&2\n"
    )
    result = saturn("batch", "--commands", "cmds.txt", "-o", "out", "--nprocs", "2")
    assert result.returncode == 1, result.stderr
    assert "2 succeeded, 1 failed" in result.stdout
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["0", "1", "2"]
    assert (out / "0" / "stdout").read_text() == "zero\n"
    assert (out / "1" / "status_code").read_text().strip() == "3"
    assert (out / "2" / "stderr").read_text() == "two\n"
    report = json.loads(saturn("status", "out", "--json").stdout)
    assert report["failed_runs"] == [
        {"path": str(out / "1"), "status_code": 3, "cmd": "echo one; exit 3"}
    ]
    # Same flags as job files: --skip-completed reruns only what did not succeed.
    (tmp_path / "cmds.txt").write_text("echo zero\necho one\necho two >&2\n")
    result = saturn("batch", "--commands", "cmds.txt", "-o", "out", "--skip-completed")
    assert result.returncode == 0, result.stderr
    assert "1 succeeded, 0 failed, 2 skipped" in result.stdout
    assert (out / "1" / "stdout").read_text() == "one\n"


def test_command_list_from_stdin(tmp_path: Path, saturn) -> None:
    lines = "".join(f"echo {i} > /dev/null\n" for i in range(25))
    result = saturn("batch", "--commands", "-", "--output", str(tmp_path / "o"), input=lines)
    assert result.returncode == 0, result.stderr
    assert sorted(int(p.name) for p in (tmp_path / "o").iterdir()) == list(range(25))
    assert {(tmp_path / "o" / str(i) / "status_code").read_text() for i in range(25)} == {"0\n"}


def test_command_list_default_nprocs_is_the_cpu_count(tmp_path: Path, saturn) -> None:
    # Each run waits until every run has started: all succeed only if all ran at once.
    cpus = os.cpu_count() or 1
    wait = f'touch started/$$; n=0; until [ "$(ls started | wc -l)" -ge {cpus} ]; do'
    wait += " n=$((n+1)); [ $n -gt 6000 ] && exit 9; sleep 0.01; done"
    (tmp_path / "started").mkdir()
    (tmp_path / "cmds.txt").write_text(f"{wait}\n" * cpus)
    result = saturn("batch", "--commands", "cmds.txt", "-o", "out", "-q", timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "started").iterdir())) == cpus


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true\n# x\necho a\0b\n", "cmds.txt:3: holds a NUL byte, which no command can"),
        (
            "true\necho " + "x" * 200_000 + "\n",
            "cmds.txt:2: is 200,005 bytes; Linux passes at most 131,071 bytes as one "
            "argument (put a long command in a script)",
        ),
        ("true\n\xff\n", "cmds.txt:2: not UTF-8 text (byte 5)"),
        ("\n# only comments\n", "cmds.txt: holds no command (only blank lines and # comments)"),
    ],
    ids=["nul", "too long", "not utf-8", "empty"],
)
def test_bad_command_list(text: str, expected: str, tmp_path: Path, saturn) -> None:
    (tmp_path / "cmds.txt").write_bytes(text.encode("latin-1"))
    _one_line_error(saturn("batch", "--commands", "cmds.txt", "-o", "out"), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmds.txt"]


def test_command_list_limits_and_flags(tmp_path: Path, saturn) -> None:
    (tmp_path / "cmds.txt").write_text("true\n" * 100)
    _one_line_error(
        saturn("batch", "--commands", "cmds.txt", "-o", "out", "--max-input-size", "100"),
        "cmds.txt: is 500 bytes, over the input size limit of 100 bytes "
        "(raise it with --max-input-size or $SATURN_MAX_INPUT_SIZE)",
    )
    _one_line_error(
        saturn(
            "batch", "--commands", "-", "-o", "out", "--max-input-size", "100", input="true\n" * 100
        ),
        "<stdin>: holds more than the input size limit of 100 bytes "
        "(raise it with --max-input-size or $SATURN_MAX_INPUT_SIZE)",
    )
    _one_line_error(
        saturn("batch", "--commands", "cmds.txt"),
        "--commands: needs --output DIR (-o): where the runs' outputs go",
    )
    _one_line_error(
        saturn("batch", "--commands", "cmds.txt", "-o", "out", "job.json"),
        "--commands: give batch FILEs or --commands, not both",
    )
    _one_line_error(saturn("batch", "-o", "out", "job.json"), "--output: goes with --commands FILE")
    _one_line_error(saturn("batch"), "batch: give batch FILEs, or --commands FILE -o DIR")
    _one_line_error(
        saturn("batch", "--commands", "cmds.txt", "-o", "gs://bucket/x"),
        "--output: unsupported scheme 'gs://' in 'gs://bucket/x' "
        "(supported: local paths, file:// and s3:// URLs)",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmds.txt"]


def test_command_list_over_arg_max_names_its_line(tmp_path: Path, saturn) -> None:
    # An inherited environment that leaves less room than the third line needs.
    arg_max = min(os.sysconf("SC_ARG_MAX"), 6 << 20)
    env = dict(os.environ)
    room = arg_max - sum(len(k) + len(v) + 10 for k, v in env.items()) - 100_000
    for index in range(0, room, 120_000):
        env[f"FILLER_{index}"] = "x" * min(120_000, room - index - 20)
    (tmp_path / "cmds.txt").write_text("true\n\necho " + "y" * 130_000 + "\n")
    result = saturn("batch", "--commands", "cmds.txt", "-o", "out", env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("saturn: error: cmds.txt:3: cmd and env take 130,014 bytes")
    assert not (tmp_path / "out").exists()


def test_text_file_as_batch_file_points_at_commands(tmp_path: Path, saturn) -> None:
    (tmp_path / "cmds.txt").write_text("python train.py --lr 0.1\npython train.py --lr 0.2\n")
    _one_line_error(
        saturn("batch", "cmds.txt"),
        "cmds.txt: $: expected `object`, got `str` "
        "(a list of commands, one per line? saturn batch --commands FILE -o DIR)",
    )
