"""Property tests of the decoders (issue 15): any bytes, and any JSON or YAML structure
up to a size limit, give a decoded file or an InputError, never another exception; and
on the command line, exit code 0, 1 or 2 and never a traceback."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from saturn_async.exceptions import InputError
from saturn_async.spec import Batch, load_batch_file
from saturn_async.spec.sweep import Sweep, load_sweep

Saturn = Callable[..., subprocess.CompletedProcess[str]]
FIELDS = [
    *Batch.__struct_fields__,
    *Sweep.__struct_fields__,
    "cmd",
    "command",
    "class_spec",
    "directory",
    "url",
]
SUFFIXES = [".json", ".yaml", ""]
PROPERTY = settings(max_examples=120, deadline=None, database=None)

keys = st.sampled_from(FIELDS) | st.text(max_size=6)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.sampled_from(["true", "out", "s3://bucket/x", "LocalExecutor", "LocalDir", "a\0b", ""])
    | st.text(max_size=12)
)
structures = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=6),
    max_leaves=30,
)
documents = st.dictionaries(keys, structures, max_size=8) | structures


def encode(document: Any, suffix: str) -> bytes:
    if suffix == ".yaml":
        return yaml.safe_dump(document, allow_unicode=True).encode()
    return json.dumps(document).encode()


def deep(depth: int) -> bytes:
    """A sweep file whose executor section nests ``depth`` lists deep."""
    inner = b"[" * depth + b"]" * depth
    return b'{"tasks": [{"command": "true"}], "executor": {"class_spec": "x", "d": ' + inner + b"}}"


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("decoders")


def decodes_or_refuses(directory: Path, data: bytes, suffix: str) -> None:
    """Both loaders return their type or raise InputError for ``data`` in a file."""
    path = directory / f"input{suffix}"
    path.write_bytes(data)
    for load, type_ in ((load_batch_file, Batch), (load_sweep, Sweep)):
        with contextlib.suppress(InputError):
            assert isinstance(load(path), type_)


@PROPERTY
@given(data=st.binary(max_size=400), suffix=st.sampled_from(SUFFIXES), bom=st.booleans())
def test_any_bytes(directory: Path, data: bytes, suffix: str, bom: bool) -> None:
    decodes_or_refuses(directory, b"\xef\xbb\xbf" * bom + data, suffix)


@PROPERTY
@given(document=documents, suffix=st.sampled_from(SUFFIXES))
def test_any_structure(directory: Path, document: Any, suffix: str) -> None:
    decodes_or_refuses(directory, encode(document, suffix), suffix)


@PROPERTY
@given(
    document=st.fixed_dictionaries(
        {
            "nprocs": scalars,
            "remote_output_path": scalars,
            "runs": st.lists(structures, max_size=3),
        },
        optional={"env": structures, "timeout": scalars, "tasks": st.lists(structures, max_size=3)},
    ),
    suffix=st.sampled_from(SUFFIXES),
)
def test_structures_shaped_like_batch_files(directory: Path, document: Any, suffix: str) -> None:
    decodes_or_refuses(directory, encode(document, suffix), suffix)


@settings(max_examples=10, deadline=None, database=None)
@given(depth=st.integers(min_value=900, max_value=5000))
def test_deep_nesting(directory: Path, depth: int) -> None:
    decodes_or_refuses(directory, deep(depth), ".json")


CLI_CASES: dict[str, tuple[str, bytes, int]] = {
    # name: (file name, contents, exit code of `saturn batch` and `saturn split`)
    "byte_order_mark": (
        "job.json",
        b'\xef\xbb\xbf{"nprocs": 1, "remote_output_path": "out", "runs": [{"cmd": "true"}]}',
        0,
    ),
    "byte_order_mark_nulls_and_defaults": (  # counted twice for duplicates, and accepted
        "job.json",
        b'\xef\xbb\xbf{"nprocs": 1, "remote_output_path": "out", "layout": "batch",'
        b' "runs": [{"cmd": "true", "timeout": null, "env": {"A": "a:b"}}]}',
        0,
    ),
    "nprocs_beyond_int64": (
        "job.json",
        b'{"nprocs": 100000000000000000000000000000, "remote_output_path": "out",'
        b' "runs": [{"cmd": "true"}]}',
        2,
    ),
    "two_yaml_documents": (
        "job.yaml",
        b"nprocs: 1\nremote_output_path: out\nruns: [{cmd: 'true'}]\n---\n",
        2,
    ),
    "duplicate_key": (
        "job",
        b'{"nprocs": 1, "remote_output_path": "out", "runs": [{"cmd": "a"}], "runs": [{"cmd": "true"}]}',
        2,
    ),
    "nul_in_path": (
        "job.json",
        b'{"nprocs": 1, "remote_output_path": "o\\u0000", "runs": [{"cmd": "true"}]}',
        2,
    ),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
@pytest.mark.parametrize("command", ["batch", "split"])
def test_command_line_exit_codes(case: str, command: str, tmp_path: Path, saturn: Saturn) -> None:
    name, data, code = CLI_CASES[case]
    (tmp_path / name).write_bytes(data)
    (tmp_path / "recipe.yaml").write_text("spec: {command: old}\n")
    args = ["batch", "-q", name] if command == "batch" else ["split", "recipe.yaml", name, "c"]
    result = saturn(*args)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, result.stderr
    if result.returncode == 2:
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith(f"saturn: error: {name}: "), result.stderr
