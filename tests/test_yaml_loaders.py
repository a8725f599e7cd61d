"""The fast (fastyaml-rs) and fallback (PyYAML) loaders read YAML 1.2 identically."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from saturn_async.exceptions import InputError
from saturn_async.spec.yaml_loader import load_yaml, load_yaml_fast, load_yaml_pyyaml

DATA = Path(__file__).parent / "data" / "yaml12"
LOADERS = [load_yaml_fast, load_yaml_pyyaml]


def test_fast_loader_is_the_default_when_installed() -> None:
    assert load_yaml is load_yaml_fast


@pytest.mark.parametrize("name", ["ambiguous.yaml", "numbers.yaml"])
def test_both_loaders_agree(name: str) -> None:
    text = (DATA / name).read_text()
    fast, fallback = (loader(text, name) for loader in LOADERS)
    assert repr(fast) == repr(fallback)


@pytest.mark.parametrize("loader", LOADERS)
def test_yaml_12_core_schema(loader: object) -> None:
    doc = loader((DATA / "numbers.yaml").read_text(), "numbers.yaml")  # type: ignore[operator]
    assert doc["octal_looking"] == 755
    assert doc["octal"] == 15
    assert doc["hex"] == 31
    assert doc["exponent"] == 1000.0
    assert doc["half"] == 0.5
    assert doc["trailing_dot"] == 1.0
    assert doc["infinity"] == -math.inf
    assert doc["sexagesimal"] == "1:20"
    assert doc["binary"] == "0b11"
    assert doc["yes_word"] == "yes"
    assert doc["no_word"] == "No"
    assert doc["tilde"] is None
    assert doc["true_word"] is True


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("name", ["duplicate_key.yaml", "duplicate_top_level.yaml"])
def test_both_loaders_reject_duplicate_keys(loader: object, name: str) -> None:
    with pytest.raises(InputError, match="duplicate key"):
        loader((DATA / name).read_text(), name)  # type: ignore[operator]


@pytest.mark.parametrize("loader", LOADERS)
def test_syntax_error_names_the_problem(loader: object) -> None:
    with pytest.raises(InputError, match="malformed YAML") as info:
        loader("runs: [1, 2\n", "bad.yaml")  # type: ignore[operator]
    assert info.value.source == "bad.yaml"


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("text", ["a: 1\n---\nb: 2\n", "a: 1\n---\n"])
def test_both_loaders_reject_a_second_document(loader: object, text: str) -> None:
    with pytest.raises(InputError, match="document"):
        loader(text, "two.yaml")  # type: ignore[operator]
