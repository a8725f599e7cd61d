"""Helpers for tests of ``saturn run``: write sweep files, read a task's outputs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from conftest import saturn_in_background, wait_for

# The seed's run.yaml (seed 003), with commands that run anywhere.
SEED_TASKS = [
    {"name": f"lr-0.{n}", "command": f"echo lr 0.{n}; echo warn 0.{n} >&2; "
     f"echo 0.{n} > $SATURN_RUN_LOCAL_RESULTS_DIR/loss.txt"}
    for n in (5, 6, 8)
] + [{"name": "lr-0.7", "command": "echo diverged >&2; exit 3"}]  # fmt: skip


def write_sweep(
    directory: Path,
    tasks: list[dict[str, Any]] | None = None,
    *,
    executor: dict[str, Any] | None = None,
    results: dict[str, Any] | None = None,
    name: str = "lr-sweep",
    **fields: Any,
) -> Path:
    doc: dict[str, Any] = {"name": name, "tasks": tasks or SEED_TASKS, **fields}
    if executor is not None:
        doc["executor"] = executor
    doc["results"] = results or {"class_spec": "LocalDir", "directory": str(directory / "results")}
    path = directory / "run.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def events_of(task_dir: Path) -> list[dict[str, Any]]:
    lines = task_dir.joinpath("events").read_text().splitlines()
    assert lines[0] == "events:"
    return [json.loads(line[2:]) for line in lines[1:]]


def assert_seed_outputs(results: Path) -> None:
    """The layout of seed 003 for SEED_TASKS: three successes, lr-0.7 failed with 3."""
    for n in (5, 6, 8):
        task = results / f"lr-0.{n}"
        assert task.joinpath("status").read_text() == "success\n"
        assert not task.joinpath("error").exists()
        assert task.joinpath("log").read_text() == f"lr 0.{n}\nwarn 0.{n}\n"
        assert task.joinpath("results", "loss.txt").read_text() == f"0.{n}\n"
        types = [e["type"] for e in events_of(task)]
        assert types == ["submitted", "started", "complete"]
    failed = results / "lr-0.7"
    assert failed.joinpath("status").read_text() == "failure\n"
    assert failed.joinpath("error").read_text() == "3\n"
    assert failed.joinpath("log").read_text() == "diverged\n"
    assert [e["type"] for e in events_of(failed)] == ["submitted", "started", "failed"]


def gated_tasks(gate: Path, count: int = 4) -> list[dict[str, Any]]:
    """Tasks t0.. that print ``started``, wait until ``gate`` exists, then print ``done i``."""
    command = "echo started; while [ ! -e {gate} ]; do sleep 0.05; done; echo done {i}"
    return [{"name": f"t{i}", "command": command.format(gate=gate, i=i)} for i in range(count)]


def detach_then_collect(
    saturn: Callable[..., Any], results: Path, gate: Path, *run_args: str
) -> None:
    """Ctrl-C on ``saturn run RUN_ARGS`` once a task has started must detach; with the gate
    then open, ``saturn collect`` must finish with every task succeeded."""
    try:
        with saturn_in_background("run", *run_args) as run:
            wait_for(lambda: list(results.glob("*/log*")), timeout=60, what="a started task")
            run.send_signal(signal.SIGINT)
            _, stderr = run.communicate(timeout=30)
    finally:
        gate.touch()  # even on failure: gated tasks would hold the shared cluster's slots
    assert run.returncode == 130, stderr
    assert "detached; the sweep keeps running" in stderr
    collected = saturn("collect", "--name", "lr-sweep", "-q", timeout=90)
    assert collected.returncode == 0, collected.stderr


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_bytes()
        except OSError:
            continue
        parent = int(stat[stat.rfind(b")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(name))
    return children


def kill_tree(pid: int) -> list[int]:
    """SIGKILL ``pid`` and every process below it, as a machine crash would."""

    def tree() -> list[int]:
        members, children = [pid], _children()
        for parent in members:
            members.extend(children.get(parent, []))
        return members

    return freeze_then_kill(tree)


def freeze_then_kill(members: Callable[[], list[int]]) -> list[int]:
    """SIGKILL every process ``members()`` finds, as a machine crash would: all are
    stopped first (until no new one appears), so none reacts to another's death."""
    stopped: set[int] = set()
    while fresh := [p for p in members() if p not in stopped]:
        for member in fresh:
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, signal.SIGSTOP)
            stopped.add(member)
    for member in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)
    return sorted(stopped)


def counted_tasks(
    starts: Path, gate: Path, done: int, held: int, parent: Path | None = None
) -> list[dict[str, Any]]:
    """``done`` tasks f0.. that finish at once, then ``held`` tasks h0.. that print
    ``attempt PID`` every 0.1 s until ``gate`` exists, and once more. Each first appends
    its name to ``starts``, the one file that counts starts. With ``parent``, held tasks
    write there the pid of the process that started them."""
    record = f"echo $SATURN_RUN_REMOTE_OUTPUT_PATH >> {starts}"
    wait = f"while [ ! -e {gate} ]; do echo attempt $$; sleep 0.1; done; echo attempt $$"
    if parent is not None:
        wait = f"echo $PPID > {parent}; {wait}"
    return [{"name": f"f{i}", "command": record} for i in range(done)] + [
        {"name": f"h{i}", "command": f"{record}; {wait}"} for i in range(held)
    ]


def attempts_in(log: str) -> set[str]:
    """The attempts (``attempt PID`` lines of counted_tasks) a held task's log holds."""
    return set(log.splitlines())


def chunks_of(task_dir: Path) -> int:
    """How many log chunks a client holds for a task whose status has not arrived."""
    log = task_dir / "log"
    return len(list(log.iterdir())) if log.is_dir() else 0


def starts_of(starts: Path) -> dict[str, int]:
    """How many times each task started, by task name."""
    counts: dict[str, int] = {}
    for line in starts.read_text().splitlines() if starts.exists() else []:
        name = line.rsplit("/", 1)[-1]
        counts[name] = counts.get(name, 0) + 1
    return counts
