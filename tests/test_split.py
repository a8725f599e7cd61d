"""``saturn split``: batch files, the rewritten recipe, skip flags, --sync."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

RECIPE = """\
type: job
spec:
  name: backfill
  image: saturncloud/python:latest
  start_script: pip install -r requirements.txt
  command: python old.py
"""


def write_inputs(tmp_path: Path, runs: int, nprocs: int = 4) -> None:
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    lines = [f"nprocs: {nprocs}", "remote_output_path: out/", "runs:"]
    lines += [f"- cmd: echo {i}" for i in range(runs)]
    (tmp_path / "batch.yaml").write_text("\n".join(lines) + "\n")


def test_seed_example_168_runs_nprocs_4(tmp_path: Path, saturn) -> None:
    write_inputs(tmp_path, 168)
    result = saturn("split", "recipe.yaml", "batch.yaml", "commands")
    assert result.returncode == 0, result.stderr
    assert "included: 168" in result.stdout
    assert "wrote 14 batch files of up to 12 runs" in result.stdout
    commands = tmp_path / "commands"
    files = sorted(commands.glob("*.json"), key=lambda p: int(p.stem))
    assert [p.name for p in files] == [f"{i}.json" for i in range(14)]
    first = json.loads(files[0].read_text())
    assert list(first) == ["nprocs", "remote_output_path", "runs"]
    assert first["nprocs"] == 4 and first["remote_output_path"] == str(tmp_path / "out")
    assert first["runs"][0] == {
        "remote_output_path": str(tmp_path / "out" / "0"),
        "cmd": "echo 0",
        "local_results_dir": str(tmp_path / "out" / "0" / "results"),
    }
    assert sum(len(json.loads(p.read_text())["runs"]) for p in files) == 168
    recipe = yaml.safe_load((commands / "recipe.yaml").read_text())
    assert recipe["spec"]["command"] == [f"sc batch {commands}/{i}.json" for i in range(14)]
    assert recipe["spec"]["name"] == "backfill"


def test_batch_files_run_and_skip_flags(tmp_path: Path, saturn) -> None:
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    runs = ["true", "exit 1", "true", "exit 2", "true"]
    (tmp_path / "job.json").write_text(
        json.dumps({"nprocs": 1, "remote_output_path": "out", "runs": [{"cmd": c} for c in runs]})
    )
    assert saturn("split", "recipe.yaml", "job.json", "c", "--batch-size", "2").returncode == 0
    assert saturn("batch", *[f"c/{i}.json" for i in range(3)], "-q").returncode == 1
    (tmp_path / "out" / "4" / "status_code").unlink()

    result = saturn(
        "split", "recipe.yaml", "job.json", "c", "--skip-completed", "--batch-size", "2"
    )
    assert result.returncode == 0, result.stderr
    assert "skipped: succeeded before: 2" in result.stdout
    assert "included: failed before: 2" in result.stdout
    assert "included: not run yet: 1" in result.stdout
    assert sorted(p.name for p in (tmp_path / "c").glob("*.json")) == ["0.json", "1.json"]

    result = saturn("split", "recipe.yaml", "job.json", "c", "--skip-completed", "--skip-failures")
    assert "skipped: failed before: 2" in result.stdout
    cmds = [r["cmd"] for r in json.loads((tmp_path / "c" / "0.json").read_text())["runs"]]
    assert cmds == ["true"]

    result = saturn("split", "recipe.yaml", "job.json", "c", "--max-jobs", "3", "--nprocs", "2")
    assert "left out by --max-jobs: 2" in result.stdout
    batch = json.loads((tmp_path / "c" / "0.json").read_text())
    assert batch["nprocs"] == 2 and len(batch["runs"]) == 3


def test_sync_block_is_replaced_not_stacked(tmp_path: Path, saturn) -> None:
    write_inputs(tmp_path, 3)
    src = tmp_path / "workspace"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "code.py").write_text("print('hi')\n")
    args = [
        "--sync",
        f"{src}:/home/jovyan/workspace",
        "--remote-commands-directory",
        "/home/jovyan/commands",
    ]
    assert saturn("split", "recipe.yaml", "batch.yaml", "c", *args).returncode == 0
    # A second split, from the recipe the first one wrote, replaces the block.
    assert saturn("split", "c/recipe.yaml", "batch.yaml", "c", *args).returncode == 0
    spec = yaml.safe_load((tmp_path / "c" / "recipe.yaml").read_text())["spec"]
    script = spec["start_script"]
    assert script.count("tar -xzf") == 1
    assert (
        "mkdir -p /home/jovyan/workspace && tar -xzf /home/jovyan/commands/sync-workspace.tar.gz"
        in script
    )
    assert script.endswith("pip install -r requirements.txt")
    assert spec["command"][0] == "sc batch /home/jovyan/commands/0.json"
    with tarfile.open(tmp_path / "c" / "sync-workspace.tar.gz") as tar:
        assert "./pkg/code.py" in tar.getnames()


def test_sync_of_missing_source_writes_nothing(tmp_path: Path, saturn) -> None:
    write_inputs(tmp_path, 3)
    result = saturn("split", "recipe.yaml", "batch.yaml", "c", "--sync", "nope")
    assert result.returncode == 2
    assert result.stderr.strip() == "saturn: error: --sync: 'nope' does not exist"
    assert not (tmp_path / "c").exists()


def test_recipe_must_be_a_mapping(tmp_path: Path, saturn) -> None:
    write_inputs(tmp_path, 3)
    (tmp_path / "recipe.yaml").write_text("- a\n- b\n")
    result = saturn("split", "recipe.yaml", "batch.yaml", "c")
    assert result.returncode == 2
    assert "recipe.yaml: $: expected a mapping at the top level, got list" in result.stderr


def test_bad_job_leaves_an_earlier_split_untouched(tmp_path: Path, saturn) -> None:
    write_inputs(tmp_path, 30)
    assert saturn("split", "recipe.yaml", "batch.yaml", "c").returncode == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "c").iterdir()}
    (tmp_path / "batch.yaml").write_text("nprocs: 4\nremote_output_path: out\nruns:\n- cmd: 5\n")
    assert saturn("split", "recipe.yaml", "batch.yaml", "c").returncode == 2
    assert {p.name: p.read_bytes() for p in (tmp_path / "c").iterdir()} == before


def test_block_start_script_stays_a_block(tmp_path: Path, saturn) -> None:
    write_inputs(tmp_path, 3)
    script = "pip install -r requirements.txt\n\nexport A=1\necho ready\n"
    recipe = {"type": "job", "spec": {"name": "b", "start_script": script, "command": "x"}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe, default_style="|"))
    assert saturn("split", "recipe.yaml", "batch.yaml", "c").returncode == 0
    text = (tmp_path / "c" / "recipe.yaml").read_text()
    assert "  start_script: |\n    pip install -r requirements.txt\n\n    export A=1\n" in text
    assert yaml.safe_load(text)["spec"]["start_script"] == script


def test_indent_pretty_prints_batch_files(tmp_path: Path, saturn) -> None:
    write_inputs(tmp_path, 3)
    assert saturn("split", "recipe.yaml", "batch.yaml", "c", "--indent", "2").returncode == 0
    text = (tmp_path / "c" / "0.json").read_text()
    assert text.startswith('{\n  "nprocs": 4,\n  "remote_output_path": ')
    assert len(json.loads(text)["runs"]) == 3
    assert saturn("split", "recipe.yaml", "batch.yaml", "c").returncode == 0
    assert "\n" not in (tmp_path / "c" / "0.json").read_text()


def test_stale_sync_tarball_is_removed(tmp_path: Path, saturn) -> None:
    write_inputs(tmp_path, 3)
    for name in ("old", "new"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text(name)
    assert saturn("split", "recipe.yaml", "batch.yaml", "c", "--sync", "old").returncode == 0
    assert (tmp_path / "c" / "sync-old.tar.gz").exists()
    (tmp_path / "c" / "sync-mine.tar.gz").write_text("not split's")
    assert saturn("split", "recipe.yaml", "batch.yaml", "c", "--sync", "new").returncode == 0
    assert not (tmp_path / "c" / "sync-old.tar.gz").exists()
    assert (tmp_path / "c" / "sync-new.tar.gz").exists()
    assert (tmp_path / "c" / "sync-mine.tar.gz").read_text() == "not split's"
    assert saturn("split", "recipe.yaml", "batch.yaml", "c").returncode == 0
    assert not (tmp_path / "c" / "sync-new.tar.gz").exists()


def test_one_batch_file_and_nothing_left(tmp_path: Path, saturn) -> None:
    write_inputs(tmp_path, 3)
    result = saturn("split", "recipe.yaml", "batch.yaml", "c")
    assert "wrote 1 batch file of up to 12 runs" in result.stdout
    assert result.stderr == ""
    result = saturn("split", "recipe.yaml", "batch.yaml", "c", "--max-jobs", "0")
    assert result.returncode == 0
    assert "wrote 0 batch files" in result.stdout
    assert result.stderr == (
        "saturn: warning: no run is left to include, so recipe.yaml's spec.command is empty\n"
    )
    assert yaml.safe_load((tmp_path / "c" / "recipe.yaml").read_text())["spec"]["command"] == []


def _tool_dir(path: Path, with_aws: bool) -> Path:
    """A PATH of only what the start script and the commands need: no aws CLI unless
    asked for, `python` and `sc` running this saturn."""
    path.mkdir()
    tools = {"python": [sys.executable], "sc": [sys.executable, "-m", "saturn_async"]}
    if with_aws:
        tools["aws"] = [sys.executable, "-m", "awscli"]
    for name, argv in tools.items():
        (path / name).write_text(f'#!/bin/sh\nexec {shlex.join(argv)} "$@"\n')
        (path / name).chmod(0o755)
    for name in ("mkdir", "tar", "gzip", "cat"):
        found = shutil.which(name)
        assert found is not None
        (path / name).symlink_to(found)
    return path


def _shipped_names(s3: str, prefix: str) -> list[str]:
    listing = subprocess.run(
        [sys.executable, "-m", "awscli", "s3", "ls", f"{s3}/{prefix}/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(line.split()[-1] for line in listing.splitlines())


@pytest.mark.parametrize("with_aws", [True, False], ids=["aws CLI", "python -m saturn_async fetch"])
def test_shipped_batches_are_fetched_and_run(
    with_aws: bool, s3: str, tmp_path: Path, saturn
) -> None:
    (tmp_path / "recipe.yaml").write_text(
        RECIPE.replace("pip install -r requirements.txt", "echo ready")
    )
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "hello.txt").write_text("hello from the workspace\n")
    unpacked = tmp_path / "unpacked"
    runs = [{"cmd": f"cat {unpacked}/hello.txt; echo {i}"} for i in range(3)]
    (tmp_path / "job.json").write_text(
        json.dumps({"nprocs": 2, "remote_output_path": "out", "runs": runs})
    )
    result = saturn(
        "split", "recipe.yaml", "job.json", "commands", "--batch-size", "2",
        "--sync", f"ws:{unpacked}", "--remote-commands-directory", f"{s3}/ship/cmds",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"uploaded the batch files and tarballs to {s3}/ship/cmds" in result.stdout
    assert _shipped_names(s3, "ship/cmds") == ["0.json", "1.json", "sync-ws.tar.gz"]
    commands = tmp_path / "commands"
    spec = yaml.safe_load((commands / "recipe.yaml").read_text())["spec"]
    assert spec["command"] == [f"sc batch {commands}/0.json", f"sc batch {commands}/1.json"]

    # The machine that runs them: a fresh directory, nothing but what S3 holds.
    shutil.rmtree(commands)
    env = {**os.environ, "PATH": str(_tool_dir(tmp_path / "bin", with_aws))}
    start = subprocess.run(
        ["/bin/sh", "-ec", spec["start_script"]],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert start.returncode == 0, start.stderr
    assert sorted(p.name for p in commands.iterdir() if p.name != ".saturn-split") == [
        "0.json", "1.json", "sync-ws.tar.gz"
    ]  # fmt: skip
    assert (commands / ".saturn-split").exists() != with_aws  # which of the two fetched
    assert (unpacked / "hello.txt").read_text() == "hello from the workspace\n"
    for line in spec["command"]:
        ran = subprocess.run(
            ["/bin/sh", "-c", line], env=env, capture_output=True, text=True, check=False
        )
        assert ran.returncode == 0, ran.stderr
    for i in range(3):
        stdout = (tmp_path / "out" / str(i) / "stdout").read_text()
        assert stdout == f"hello from the workspace\n{i}\n"


def test_shipping_to_a_missing_bucket_writes_nothing(s3: str, tmp_path: Path, saturn) -> None:
    write_inputs(tmp_path, 3)
    url = "s3://no-such-bucket-here/cmds"
    result = saturn("split", "recipe.yaml", "batch.yaml", "c", "--remote-commands-directory", url)
    assert result.returncode == 2
    assert result.stderr == "saturn: error: s3://no-such-bucket-here: HeadBucket: no such bucket\n"
    assert not (tmp_path / "c").exists()


def test_fetch_replaces_only_what_saturn_wrote(s3: str, tmp_path: Path, saturn) -> None:
    write_inputs(tmp_path, 30)
    url = f"{s3}/cmds"
    assert (
        saturn(
            "split", "recipe.yaml", "batch.yaml", "c", "--remote-commands-directory", url
        ).returncode
        == 0
    )
    result = saturn("fetch", url, "fresh")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "fetched 3 files to fresh\n"
    assert [(tmp_path / "fresh" / f"{i}.json").read_bytes() for i in range(3)] == [
        (tmp_path / "c" / f"{i}.json").read_bytes() for i in range(3)
    ]
    assert saturn("fetch", url, "fresh").returncode == 0  # again: its own files
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "1.json").write_text("the user's own")
    result = saturn("fetch", url, "mine")
    assert result.returncode == 2
    assert result.stderr == (
        f"saturn: error: {tmp_path}/mine/1.json: exists and was not written by saturn; move it away\n"
    )
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["1.json"]
    assert (tmp_path / "mine" / "1.json").read_text() == "the user's own"
    result = saturn("fetch", f"{s3}/elsewhere", "other")
    assert result.returncode == 2
    assert result.stderr == (
        f"saturn: error: {s3}/elsewhere: holds no batch files (N.json) or sync tarballs\n"
    )
    assert not (tmp_path / "other").exists()
