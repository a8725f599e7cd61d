"""Bad input: exit 2, one line naming the file and field, no traceback, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BAD_JOBS: dict[str, tuple[str, str]] = {
    # name: (file contents, expected fragment of the one-line error)
    "truncated_json": ('{"nprocs": 2, "runs": [', "malformed JSON: Input data was truncated"),
    "malformed_json": ('{"nprocs": 2,\n "runs": ]}', "malformed JSON at line 2, column 10"),
    "wrong_type": (
        '{"nprocs": 2, "remote_output_path": "out", "runs": [{"cmd": 5}]}',
        "$.runs[0].cmd: expected `str`, got `int`",
    ),
    "missing_cmd": (
        '{"nprocs": 2, "remote_output_path": "out", "runs": [{"cmd": "true"}, {}]}',
        "$.runs[1].cmd: required field is missing",
    ),
    "empty_runs": (
        '{"nprocs": 2, "remote_output_path": "out", "runs": []}',
        "$.runs: expected `array` of length >= 1",
    ),
    "nprocs_zero": (
        '{"nprocs": 0, "remote_output_path": "out", "runs": [{"cmd": "true"}]}',
        "$.nprocs: expected `int` >= 1",
    ),
    "misspelt_field": (
        '{"nprocs": 2, "remote_output_path": "out",'
        ' "runs": [{"cmd": "true", "remote_ouput_path": "out/x"}]}',
        "$.runs[0].remote_ouput_path: unknown field (did you mean 'remote_output_path'?)",
    ),
    "same_output_path": (
        '{"nprocs": 2, "remote_output_path": "out", "runs": [{"cmd": "true",'
        ' "remote_output_path": "out/a"}, {"cmd": "true", "remote_output_path": "out/a/"}]}',
        "$.runs[1].remote_output_path: ",
    ),
    "escapes_with_dotdot": (
        '{"nprocs": 2, "remote_output_path": "out",'
        ' "runs": [{"cmd": "true", "remote_output_path": "out/../elsewhere"}]}',
        "$.runs[0].remote_output_path: 'out/../elsewhere' is not inside",
    ),
    "nested_output_paths": (
        '{"nprocs": 2, "remote_output_path": "out", "runs": [{"cmd": "true",'
        ' "remote_output_path": "out/a/b"}, {"cmd": "true", "remote_output_path": "out/a"}]}',
        "$.runs[0].remote_output_path: ",
    ),
    "unsupported_scheme": (
        '{"nprocs": 2, "remote_output_path": "sfs://internal/x", "runs": [{"cmd": "true"}]}',
        "$.remote_output_path: unsupported scheme 'sfs://'",
    ),
    "missing_nprocs": (
        '{"remote_output_path": "out", "runs": [{"cmd": "true"}]}',
        "$.nprocs: required field is missing",
    ),
    "negative_timeout": (
        '{"nprocs": 1, "remote_output_path": "out", "runs": [{"cmd": "true", "timeout": -1}]}',
        "$.runs[0].timeout: expected `float` > 0.0",
    ),
}


def _assert_one_line_error(result: object, fragment: str) -> None:
    assert result.returncode == 2, result.stderr  # type: ignore[attr-defined]
    lines = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1, result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in result.stderr  # type: ignore[attr-defined]
    assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("case", sorted(BAD_JOBS))
@pytest.mark.parametrize("command", ["batch", "split"])
def test_bad_job_file(case: str, command: str, tmp_path: Path, saturn: object) -> None:
    text, fragment = BAD_JOBS[case]
    (tmp_path / "job.json").write_text(text)
    (tmp_path / "recipe.yaml").write_text("spec: {command: old}\n")
    args = (
        ["batch", "job.json"]
        if command == "batch"
        else ["split", "recipe.yaml", "job.json", "cmds"]
    )
    result = saturn(*args)  # type: ignore[operator]
    _assert_one_line_error(result, f"job.json: {fragment}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.json", "recipe.yaml"]


def test_missing_file(saturn: object) -> None:
    _assert_one_line_error(saturn("batch", "nope.json"), "nope.json: cannot read: No such file")  # type: ignore[operator]


def test_yaml_error_names_line(tmp_path: Path, saturn: object) -> None:
    (tmp_path / "job.yaml").write_text("nprocs: 2\nruns:\n- cmd: [unclosed\n")
    _assert_one_line_error(saturn("batch", "job.yaml"), "job.yaml: malformed YAML")  # type: ignore[operator]


def test_yaml_field_path(tmp_path: Path, saturn: object) -> None:
    (tmp_path / "job.yaml").write_text("nprocs: 2\nremote_output_path: o\nruns:\n- cmd: true\n")
    _assert_one_line_error(
        saturn("batch", "job.yaml"),  # type: ignore[operator]
        "job.yaml: $.runs[0].cmd: expected `str`, got `bool`",
    )


def test_one_bad_file_of_several_starts_nothing(
    tmp_path: Path, write_job: object, saturn: object
) -> None:
    write_job(["touch ran"], name="good.json")  # type: ignore[operator]
    (tmp_path / "bad.json").write_text(json.dumps({"nprocs": 1, "runs": [{"cmd": "x"}]}))
    _assert_one_line_error(
        saturn("batch", "good.json", "bad.json"), "bad.json: $.remote_output_path"
    )  # type: ignore[operator]
    assert not (tmp_path / "ran").exists()
    assert not (tmp_path / "out").exists()


def test_same_output_path_across_files(tmp_path: Path, write_job: object, saturn: object) -> None:
    write_job(["true"], name="a.json")  # type: ignore[operator]
    write_job(["true"], name="b.json")  # type: ignore[operator]
    result = saturn("batch", "a.json", "b.json")  # type: ignore[operator]
    _assert_one_line_error(result, "b.json: $.runs[0].remote_output_path: ")
    assert "a.json" in result.stderr


def test_bad_flag_is_a_usage_error(saturn: object) -> None:
    result = saturn("batch", "--nprocs", "0", "x.json")  # type: ignore[operator]
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
