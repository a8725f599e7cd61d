"""Output paths from a hostile review: runs of different files nested in each other's
output, non-UTF-8 paths from the command line, S3 keys S3 cannot list, relative
``local_results_dir`` in split's batch files, ``//x`` against ``/x``, and ``file://``
URLs with a query or fragment.

A refused command exits 2 with one line and changes nothing (a snapshot of the test's
directory before and after); an accepted one runs.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import CLI
from hostile import changes_outside, snapshot
from saturn_async.exceptions import InputError
from saturn_async.spec import Batch, Run, check_distinct_outputs, resolve_batch

Saturn = Callable[..., subprocess.CompletedProcess[Any]]


def write(path: Path, root: Path | str, *runs: dict[str, Any]) -> str:
    doc = {"nprocs": 1, "remote_output_path": str(root), "runs": list(runs) or [{"cmd": "true"}]}
    path.write_text(json.dumps(doc))
    return path.name


def saturn_bytes(cwd: Path, *args: str | bytes) -> subprocess.CompletedProcess[bytes]:
    """``saturn ARGS...`` with arguments that may not be UTF-8, output as bytes."""
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, timeout=60, check=False)


def one_line_refusal(result: subprocess.CompletedProcess[Any]) -> str:
    stderr = result.stderr if isinstance(result.stderr, str) else os.fsdecode(result.stderr)
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


# --- 1. runs of different files nested in each other's output -----------------------

# (file a's root and runs, file b's root and runs, the expected line's fragments); paths
# relative to the test's directory, a run None for the default ROOT/INDEX.
NESTED: dict[str, tuple[tuple[str, list[str | None]], tuple[str, list[str | None]], str]] = {
    "a run inside another file's run": (
        ("out", ["out/x"]),
        ("out", ["out/x/results"]),
        "b.json: $.runs[0].remote_output_path: '{t}/out/x/results' lies inside the output "
        "path of $.runs[0] in a.json",
    ),
    "a run holding another file's run (the inner one is named)": (
        ("out", ["out/x/y/z"]),
        ("out", [None, "out/x"]),
        "a.json: $.runs[0].remote_output_path: '{t}/out/x/y/z' lies inside the output path "
        "of $.runs[1] in b.json",
    ),
    "a root inside another file's run": (
        ("out", [None]),
        ("out/0/deeper", [None]),
        "b.json: $.remote_output_path: '{t}/out/0/deeper' lies inside the output path of "
        "$.runs[0] in a.json",
    ),
    "a root that is another file's run": (
        ("out", ["out/r"]),
        ("out/r", [None]),
        "b.json: $.remote_output_path: '{t}/out/r' is the output path of $.runs[0] in a.json",
    ),
    "a root inside another file's .saturn/": (
        ("out", [None]),
        ("out/.saturn/ledger", [None]),
        "b.json: $.remote_output_path: '{t}/out/.saturn/ledger' lies inside saturn's "
        "reserved .saturn/ of a.json",
    ),
    "a run that is another file's .saturn/": (
        ("out/sub", [None]),
        ("out", ["out/sub/.saturn"]),
        "b.json: $.runs[0].remote_output_path: '{t}/out/sub/.saturn' is saturn's reserved "
        ".saturn/ of a.json",
    ),
    "a run inside another file's run, through a symlinked root": (
        ("out", ["out/x"]),
        ("link/x", ["link/x/y"]),
        "b.json: $.remote_output_path: '{t}/link/x' is the output path of $.runs[0] in a.json",
    ),
}


def write_pair(tmp_path: Path, case: str) -> None:
    (tmp_path / "link").symlink_to("out")
    for name, (root, paths) in zip(("a.json", "b.json"), NESTED[case][:2], strict=True):
        runs = [{"cmd": f"echo {name} > ran-{name}-{i}"} for i in range(len(paths))]
        for run, path in zip(runs, paths, strict=True):
            if path is not None:
                run["remote_output_path"] = str(tmp_path / path)
        write(tmp_path / name, tmp_path / root, *runs)


@pytest.mark.parametrize("case", sorted(NESTED))
@pytest.mark.parametrize("order", ["a b", "b a"])
def test_runs_of_two_files_nested_in_each_other_are_refused(
    case: str, order: str, tmp_path: Path, saturn: Saturn
) -> None:
    write_pair(tmp_path, case)
    before = snapshot(tmp_path)
    line = one_line_refusal(saturn("batch", *[f"{n}.json" for n in order.split()]))
    assert NESTED[case][2].format(t=tmp_path) in line, line
    assert changes_outside(before, snapshot(tmp_path), []) == []


def test_the_first_files_results_are_not_overwritten(tmp_path: Path, saturn: Saturn) -> None:
    """The review's case: a.json ran (its results are precious), then a.json and b.json
    again, b's run inside a's: before, both ran and b's wrote over a's results/."""
    a = write(tmp_path / "a.json", tmp_path / "out", {"cmd": "echo A > $SATURN_RUN_LOCAL_RESULTS_DIR/r", "remote_output_path": str(tmp_path / "out/x")})  # fmt: skip
    b = write(tmp_path / "b.json", tmp_path / "out", {"cmd": "echo B", "remote_output_path": str(tmp_path / "out/x/results")})  # fmt: skip
    assert saturn("batch", "-q", a).returncode == 0
    assert (tmp_path / "out/x/results/r").read_text() == "A\n"
    before = snapshot(tmp_path)
    one_line_refusal(saturn("batch", "-q", a, b))
    assert changes_outside(before, snapshot(tmp_path), []) == []
    assert (tmp_path / "out/x/results/r").read_text() == "A\n"


def test_files_of_one_split_sharing_a_root_are_taken(tmp_path: Path, saturn: Saturn) -> None:
    names = [write(tmp_path / f"{i}.json", tmp_path / "out", {"cmd": "true", "remote_output_path": str(tmp_path / f"out/{i}")}) for i in range(3)]  # fmt: skip
    nested = write(tmp_path / "n.json", tmp_path / "out/9", {"cmd": "true"})  # a root inside
    result = saturn("batch", "-q", *names, nested)
    assert result.returncode == 0, result.stderr
    assert [(tmp_path / f"out/{i}/status_code").read_text() for i in range(3)] == ["0\n"] * 3
    assert (tmp_path / "out/9/0/status_code").read_text() == "0\n"


def test_s3_roots_in_another_files_saturn_directory_are_refused() -> None:
    """No S3 needed: the files are compared once resolved, before anything is reached."""
    a = resolve_batch(Batch(nprocs=1, remote_output_path="s3://bucket/sw", runs=[Run(cmd="x")]), "a")  # fmt: skip
    b = Batch(nprocs=1, remote_output_path="s3://bucket/sw/.saturn", runs=[Run(cmd="x", remote_output_path="s3://bucket/sw/.saturn/ledger")])  # fmt: skip
    with pytest.raises(InputError) as caught:
        check_distinct_outputs([("a.json", a), ("b.json", resolve_batch(b, "b.json"))])
    assert str(caught.value) == (
        "b.json: $.remote_output_path: 's3://bucket/sw/.saturn' is saturn's reserved .saturn/ "
        "of a.json"
    )


@pytest.mark.timeout(60)
def test_many_nested_runs_are_compared_without_a_scan_of_pairs() -> None:
    """200,000 nested runs in 2 files: a walk per path below its root (a scan of pairs,
    4e10 comparisons, would not end in time)."""
    size = 100_000
    a = Batch(nprocs=1, remote_output_path="/srv/o", runs=[Run(cmd="x", remote_output_path=f"/srv/o/{i}/a") for i in range(size)])  # fmt: skip
    b = Batch(nprocs=1, remote_output_path="/srv/o", runs=[Run(cmd="x", remote_output_path=f"/srv/o/{i}/b/c") for i in range(size)])  # fmt: skip
    b.runs.append(Run(cmd="x", remote_output_path="/srv/o/7/a/c"))
    named = [("a.json", resolve_batch(a, "a.json")), ("b.json", resolve_batch(b, "b.json"))]
    with pytest.raises(InputError) as caught:
        check_distinct_outputs(named)
    assert str(caught.value) == (
        f"b.json: $.runs[{size}].remote_output_path: '/srv/o/7/a/c' lies inside the output "
        "path of $.runs[7] in a.json"
    )


# --- 2. a non-UTF-8 output path from the command line ----------------------------------


def test_a_long_non_utf8_output_path_runs_like_a_short_one(tmp_path: Path) -> None:
    (tmp_path / "cmds.txt").write_text("echo hi\n")
    for name in (b"o\xff", b"o\xff" + b"y" * 70):  # the long one was a UnicodeEncodeError
        out = os.fsencode(tmp_path) + b"/" + name
        result = saturn_bytes(tmp_path, "batch", "-q", "--commands", "cmds.txt", "-o", out)
        assert result.returncode == 0, result.stderr
        assert Path(os.fsdecode(out), "0/stdout").read_bytes() == b"hi\n"


@pytest.mark.parametrize("name", [b"p\xff", b"p\xff" + b"y" * 70, b"s3://bucket/p\xff"])
def test_split_refuses_a_non_utf8_remote_output_path(name: bytes, tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("spec: {}\n")
    write(tmp_path / "j.json", tmp_path / "o")
    root = name if name.startswith(b"s3://") else os.fsencode(tmp_path) + b"/" + name
    before = snapshot(tmp_path)
    flag = ("--remote-output-path", root)
    line = one_line_refusal(saturn_bytes(tmp_path, "split", "r.yaml", "j.json", "cmds", *flag))
    assert line.startswith("saturn: error: --remote-output-path: ") and "not UTF-8" in line
    assert changes_outside(before, snapshot(tmp_path), []) == []


# --- 3. an S3 key S3 cannot list -------------------------------------------------------


@pytest.mark.parametrize("key", ["b\nc", "b\tc", "b\x7f"])
def test_an_s3_key_with_a_control_character_is_refused_when_planning(
    key: str, tmp_path: Path, saturn: Saturn
) -> None:
    (tmp_path / "r.yaml").write_text("spec: {}\n")
    write(tmp_path / "j.json", "s3://bucket/cc", {"cmd": "x", "remote_output_path": f"s3://bucket/cc/{key}"}, {"cmd": "y"})  # fmt: skip
    before = snapshot(tmp_path)
    line = one_line_refusal(saturn("split", "r.yaml", "j.json", "cmds"))
    assert line == (
        f"saturn: error: j.json: $.runs[0].remote_output_path: 's3://bucket/cc/{key}' cannot "
        "be stored on S3: its name holds a control character, which S3 listings cannot carry"
    ).replace(key, repr(key)[1:-1])
    assert changes_outside(before, snapshot(tmp_path), []) == []


def test_a_root_given_with_a_control_character_is_refused() -> None:
    batch = Batch(nprocs=1, runs=[Run(cmd="x")])
    with pytest.raises(InputError, match=r"-o: .*cannot be stored on S3: its name holds"):
        resolve_batch(batch, "-o", remote_output_path="s3://bucket/a\rb")


# --- 4. split writes local_results_dir absolute ----------------------------------------


@pytest.mark.parametrize("outputs", ["default", "given"])  # the batch-wide path, run by run
def test_split_writes_a_relative_local_results_dir_absolute(
    outputs: str, tmp_path: Path, saturn: Saturn
) -> None:
    (tmp_path / "r.yaml").write_text("spec: {}\n")
    runs = [{"cmd": "x", "local_results_dir": d} for d in ("rel/a", "./rel//b/", "/abs/c")]
    if outputs == "given":
        for index, run in enumerate(runs):
            run["remote_output_path"] = f"o/../o/{index}"  # not plain: checked run by run
    write(tmp_path / "j.json", "o", *runs)
    result = saturn("split", "r.yaml", "j.json", "cmds")
    assert result.returncode == 0, result.stderr
    written = json.loads((tmp_path / "cmds/0.json").read_text())["runs"]
    assert [run["local_results_dir"] for run in written] == [
        f"{tmp_path}/rel/a",
        f"{tmp_path}/rel/b",
        "/abs/c",
    ]
    assert [run["remote_output_path"] for run in written] == [f"{tmp_path}/o/{i}" for i in range(3)]


# --- 5. '//x' is '/x' ------------------------------------------------------------------


# (root, run paths, the first's error, from 'j.json: '); runs[1:] alone are taken
TWO_SLASHES = [
    ("/", ["/x", "//x"], "$.runs[1].remote_output_path: '/x' is also the output path of"),
    ("/", [None, "//0"], "$.runs[1].remote_output_path: '/0' is also the output path of"),
    ("/", ["/x", "//x/y"], "$.runs[1].remote_output_path: '/x/y' lies inside the output"),
    ("//srv", ["/srv/x", "//srv/x"], "$.runs[1].remote_output_path: '/srv/x' is also"),
    ("file:////srv", ["/srv/x", "file:////srv//x"], "$.runs[1].remote_output_path: '/srv/x'"),
]


@pytest.mark.parametrize(("root", "paths", "error"), TWO_SLASHES)
def test_a_leading_double_slash_is_one_slash(
    root: str, paths: list[str | None], error: str
) -> None:
    runs = [Run(cmd="true", remote_output_path=path) for path in paths]
    with pytest.raises(InputError) as caught:
        resolve_batch(Batch(nprocs=1, remote_output_path=root, runs=runs), "j.json")
    assert str(caught.value).startswith(f"j.json: {error}"), str(caught.value)
    alone = resolve_batch(Batch(nprocs=1, remote_output_path=root, runs=runs[1:]), "j.json")
    assert alone.remote_output_path == ("/" if root == "/" else "/srv")
    assert alone.runs[0].remote_output_path is not None
    assert not alone.runs[0].remote_output_path.startswith("//")


def test_a_root_spelled_with_two_slashes_is_the_same_root_across_files(
    tmp_path: Path, saturn: Saturn
) -> None:
    a = write(tmp_path / "a.json", tmp_path / "o", {"cmd": "echo A > $SATURN_RUN_LOCAL_RESULTS_DIR/r"})  # fmt: skip
    b = write(tmp_path / "b.json", f"/{tmp_path}/o", {"cmd": "echo B > $SATURN_RUN_LOCAL_RESULTS_DIR/r"})  # fmt: skip
    line = one_line_refusal(saturn("batch", a, b))
    assert f"b.json: $.runs[0].remote_output_path: '{tmp_path}/o/0' is also the output" in line
    assert not (tmp_path / "o").exists()


# --- 6. file:// URLs with a query or fragment ------------------------------------------


@pytest.mark.parametrize("suffix", ["?v=1", "#frag", "?", "#", "/x?y#z"])
def test_a_file_url_with_a_query_or_fragment_is_refused(
    suffix: str, tmp_path: Path, saturn: Saturn
) -> None:
    url = f"file://{tmp_path}/o{suffix}"
    write(tmp_path / "j.json", url, {"cmd": "touch ran"})
    before = snapshot(tmp_path)
    line = one_line_refusal(saturn("batch", "j.json"))
    assert line == (
        f"saturn: error: j.json: $.remote_output_path: file:// URL {url!r} has a query or "
        "fragment, which a local path has not (write '?' as %3F and '#' as %23)"
    )
    assert changes_outside(before, snapshot(tmp_path), []) == []
    ok = f"file://{tmp_path}/o%3Fv%23"
    write(tmp_path / "j.json", ok, {"cmd": "touch ran"})
    assert saturn("batch", "-q", "j.json").returncode == 0
    assert (tmp_path / "o?v#/0/status_code").read_text() == "0\n"
