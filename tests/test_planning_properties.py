"""Fast planning (issue 17): the batch-wide checks give exactly what the run-by-run ones
give, the same resolved paths or the same one-line error, for random paths ('.', '..',
'//', a trailing '/', unicode, NUL, other roots and schemes, duplicates, one inside
another's), random command lines and random task names; and a planned sweep is checked
in full before the first batch comes out, none of them held."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from saturn_async.exceptions import InputError
from saturn_async.spec import Batch, Run, resolve_batch
from saturn_async.spec.check import MAX_ARG_BYTES, check_runnable
from saturn_async.spec.paths import (
    RESERVED,
    is_strictly_inside,
    normalize_location,
    plainly_inside,
)
from saturn_async.spec.resolve import _resolve_each, _resolve_plain
from saturn_async.spec.sweep import Sweep, Task, _check_names, load_sweep
from saturn_async.sweep.plan import plan_sweep

PROPERTY = settings(max_examples=400, deadline=None, database=None)
ROOTS = ["/srv/out", "/", "//net/out", "rel/out", "s3://bucket", "s3://bucket/k/ey", "/srv/ü"]
PLAIN = ["a", "b", "0", "1", ".hidden", "é", "x y", "n" * 70]
ODD = [".", "..", "", ".saturn", "a\0", "c\x01", "d\n"]  # a control character: not on S3
COMPONENTS = PLAIN + ODD
component = st.one_of(*[st.sampled_from(PLAIN)] * 6, st.sampled_from(ODD))
components = st.lists(component, min_size=0, max_size=4)


@st.composite
def output_paths(draw: st.DrawFn, root: str) -> str | None:
    """None (the default, ROOT/INDEX) or a path: below the root as written, normalized,
    with a trailing '/', under another root or scheme, or anything at all."""
    kind = draw(st.sampled_from(["default", *["below"] * 6, "other", "text"]))
    if kind == "default":
        return None
    if kind == "text":
        return draw(st.text(max_size=12))
    parts = draw(components)
    start = draw(st.sampled_from([root, root + "/", "/elsewhere", "file://" + root, "s3://b"]))
    if kind == "below":
        start = root if not root.startswith("rel") else os.path.abspath(root)
    path = start.rstrip("/") + "/" + "/".join(parts) if parts else start
    return path + draw(st.sampled_from(["", "", "", "", "", "/", "//"]))


@st.composite
def batches(draw: st.DrawFn) -> Batch:
    root = draw(st.sampled_from(ROOTS))
    paths = draw(st.lists(output_paths(root), min_size=1, max_size=8))
    odd_dirs = st.sampled_from(
        ["/tmp/r", "r", "./r//s/", "//r", "/t/../r", "a\0b", "/" + "d" * 300, "/x/" * 40]
    )
    dirs = st.one_of(*[st.none()] * 6, odd_dirs)
    runs = [Run(cmd="true", remote_output_path=p, local_results_dir=draw(dirs)) for p in paths]
    return Batch(nprocs=2, remote_output_path=root, runs=runs)


def outcome(
    action: Callable[[], object], runs: list[Run] = ()
) -> list[tuple[str | None, str | None]] | str:
    """The output paths and ``local_results_dir`` of ``runs`` after ``action``, or its
    error's one line."""
    try:
        action()
    except InputError as exc:
        return str(exc)
    return [(run.remote_output_path, run.local_results_dir) for run in runs]


@PROPERTY
@given(batch=batches())
def test_resolving_a_batch_at_once_gives_what_run_by_run_gives(batch: Batch) -> None:
    root = batch.remote_output_path
    assert root is not None
    base = normalize_location(root, source="job.json", field="$.remote_output_path")
    copy = msgspec.structs.replace
    one_by_one = copy(batch, runs=[copy(run) for run in batch.runs])
    expected = outcome(lambda: _resolve_each(one_by_one.runs, base, "job.json"), one_by_one.runs)
    at_once = copy(batch, runs=[copy(run) for run in batch.runs])
    taken = _resolve_plain(at_once.runs, base)
    event(f"at once: {taken}; run by run: {'ok' if isinstance(expected, list) else 'error'}")
    if taken:
        assert [(run.remote_output_path, run.local_results_dir) for run in at_once.runs] == expected
    else:
        assert at_once == batch  # changed nothing: the run-by-run checks decide
    whole = copy(batch, runs=[copy(run) for run in batch.runs])
    assert outcome(lambda: resolve_batch(whole, "job.json"), whole.runs) == expected


@PROPERTY
@given(root=st.sampled_from(ROOTS), data=st.data())
def test_plainly_inside_only_paths_that_normalize_to_themselves(
    root: str, data: st.DataObject
) -> None:
    base = normalize_location(root, source="j", field="$")
    paths = data.draw(st.lists(output_paths(base).filter(lambda p: p is not None), max_size=5))
    if plainly_inside(base, paths):
        for path in paths:
            assert normalize_location(path, source="j", field="$") == path
            assert is_strictly_inside(base, path)
            assert path[len(base) :].lstrip("/").split("/")[0] != RESERVED


def test_the_fast_path_is_taken_for_plain_batches() -> None:
    runs = [Run(cmd="true", remote_output_path=f"/srv/out/{i}/x") for i in range(3)]
    runs.append(Run(cmd="true"))  # default path /srv/out/3
    assert _resolve_plain(runs, "/srv/out")
    assert runs[3].remote_output_path == "/srv/out/3"
    nested = [Run(cmd="true", remote_output_path="/srv/out/1/x"), Run(cmd="true")]
    assert not _resolve_plain(nested, "/srv/out")  # inside run 1's default path
    assert nested[1].remote_output_path is None


commands = st.sampled_from(["true", "echo é", "a\0b", "x" * (MAX_ARG_BYTES // 4 + 1)])
envs = st.none() | st.dictionaries(st.sampled_from(["A", "", "B=", "C\0"]), st.text(max_size=3))


@PROPERTY
@given(cmds=st.lists(commands, min_size=1, max_size=5), run_envs=st.lists(envs, max_size=5))
def test_checking_commands_at_once_gives_the_first_run_by_run_error(
    cmds: list[str], run_envs: list[dict[str, str] | None]
) -> None:
    runs = [Run(cmd=cmd, env=env) for cmd, env in zip(cmds, [*run_envs, *[None] * 5], strict=False)]
    expected: list[str | None] | str = []
    for index, run in enumerate(runs):
        alone = outcome(lambda run=run: check_runnable(Batch(runs=[run]), "j"))
        if alone:
            expected = str(alone).replace("$.runs[0]", f"$.runs[{index}]")
            break
    assert outcome(lambda: check_runnable(Batch(runs=runs), "j")) == expected


NAMES = [
    None,
    "a",
    "b",
    "0",
    "1",
    "",
    ".",
    "..",
    ".saturn",
    "x/y",
    "n\0",
    "é",
    "n" * 256,
    "é" * 100,
]


@PROPERTY
@given(names=st.lists(st.sampled_from(NAMES), min_size=1, max_size=6))
def test_task_names_checked_at_once_give_the_run_by_run_error(
    tmp_path_factory: pytest.TempPathFactory, names: list[str | None]
) -> None:
    path = tmp_path_factory.mktemp("names") / "run.json"
    tasks = [
        {"command": "true"} if name is None else {"name": name, "command": "true"} for name in names
    ]
    path.write_bytes(msgspec.json.encode({"tasks": tasks}))
    filled = [str(i) if name is None else name for i, name in enumerate(names)]
    assert outcome(lambda: load_sweep(path)) == outcome(lambda: _check_names(filled, str(path)))


def test_a_planned_sweep_is_checked_in_full_then_built_batch_by_batch(tmp_path: Path) -> None:
    tasks = [Task(name=f"t{i}", command="true") for i in range(7)]
    sweep = Sweep(tasks=tasks, batch_size=3)
    plan = plan_sweep(sweep, str(tmp_path), nprocs=2, groups=1, source="run.yaml")
    assert len(plan) == 3
    first, again = list(plan), list(plan)
    assert first == again == list(plan_sweep(sweep, str(tmp_path), 2, 1, "run.yaml"))
    assert first[0] is not again[0]  # made again: the plan holds no batch
    sweep.tasks[6].command = "a\0b"
    with pytest.raises(InputError) as caught:
        plan_sweep(sweep, str(tmp_path), nprocs=2, groups=1, source="run.yaml")
    assert (
        str(caught.value) == "run.yaml: $.tasks[6].command: holds a NUL byte, which no command can"
    )


@pytest.mark.timeout(20)
def test_a_path_below_the_root_slash_that_starts_with_two_slashes_is_resolved() -> None:
    runs = [Run(cmd="true", remote_output_path="//a/b"), Run(cmd="true", remote_output_path="//a")]
    with pytest.raises(InputError) as caught:  # before: dirname('//') is '//', forever
        resolve_batch(Batch(nprocs=1, remote_output_path="/", runs=runs), "job.json")
    assert str(caught.value) == (
        "job.json: $.runs[0].remote_output_path: '/a/b' lies inside the output path of $.runs[1]"
    )
    alone = resolve_batch(Batch(nprocs=1, remote_output_path="/", runs=runs[:1]), "job.json")
    assert alone.runs[0].remote_output_path == "/a/b"  # one spelling: '//a/b' is '/a/b'
