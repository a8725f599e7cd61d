"""YAML 1.2 (core schema) loading, fast when the ``fast-yaml`` extra is installed.

Two loaders give the same result on every input: the Rust loader from ``fastyaml-rs``
(extra ``saturn_async[fast-yaml]``) and a PyYAML fallback whose resolvers follow the
YAML 1.2 core schema rather than PyYAML's YAML 1.1 defaults. So ``yes`` and ``on`` stay
strings, ``0755`` is the integer 755, ``1e3`` is a float, dates stay strings, and a
duplicate key is an error in both.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import yaml
import yaml.composer
import yaml.constructor
import yaml.nodes
import yaml.parser
import yaml.reader
import yaml.resolver
import yaml.scanner

from saturn_async.exceptions import InputError

YamlLoader = Callable[[str, str], Any]


class _Yaml12Resolver(yaml.resolver.BaseResolver):
    """Implicit tags of the YAML 1.2 core schema."""


_RESOLVERS: list[tuple[str, str, str]] = [
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
]
for _tag, _pattern, _first in _RESOLVERS:
    _Yaml12Resolver.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))
_Yaml12Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)


class _Yaml12Constructor(yaml.constructor.SafeConstructor):
    """SafeConstructor with YAML 1.2 numbers and duplicate keys rejected."""

    def construct_mapping(self, node: yaml.nodes.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.nodes.ScalarNode) -> int:
        value = str(self.construct_scalar(node))
        return int(value, 0) if value[:2] in ("0o", "0x") else int(value, 10)

    def construct_yaml_float(self, node: yaml.nodes.ScalarNode) -> float:
        value = str(self.construct_scalar(node)).lower()
        if value.endswith(".inf"):
            return float("-inf") if value.startswith("-") else float("inf")
        return float(value)


_Yaml12Constructor.yaml_constructors = {
    **yaml.constructor.SafeConstructor.yaml_constructors,
    "tag:yaml.org,2002:int": _Yaml12Constructor.construct_yaml_int,
    "tag:yaml.org,2002:float": _Yaml12Constructor.construct_yaml_float,
}


class _PureParser(
    yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, yaml.composer.Composer
):
    """PyYAML's pure-Python parser, for installs without libyaml."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)


try:
    from yaml._yaml import CParser as _Parser
except ImportError:  # PyYAML built without libyaml
    _Parser = _PureParser  # type: ignore[assignment,misc]


class _Yaml12Loader(_Parser, _Yaml12Constructor, _Yaml12Resolver):
    def __init__(self, stream: str) -> None:
        _Parser.__init__(self, stream)
        _Yaml12Constructor.__init__(self)
        _Yaml12Resolver.__init__(self)


def load_yaml_pyyaml(text: str, source: str) -> Any:
    """Load one YAML document with PyYAML, under YAML 1.2 core-schema rules."""
    loader = _Yaml12Loader(text)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InputError(f"malformed YAML{where}: {exc.problem}", source=source) from exc
    except yaml.YAMLError as exc:
        raise InputError(f"malformed YAML: {exc}", source=source) from exc
    finally:
        loader.dispose()


def load_yaml_fast(text: str, source: str) -> Any:
    """Load one YAML document with fastyaml-rs (YAML 1.2), rejecting duplicate keys and
    further documents (PyYAML's ``get_single_data`` refuses those too)."""
    import fast_yaml
    import fast_yaml.lint

    try:
        documents = list(fast_yaml.safe_load_all(text))
    except (ValueError, fast_yaml.YAMLError) as exc:
        raise InputError(f"malformed YAML: {_first_line(exc)}", source=source) from exc
    if len(documents) > 1:
        raise InputError(
            f"malformed YAML: holds {len(documents)} documents (--- separates them); "
            "saturn reads one",
            source=source,
        )
    data = documents[0] if documents else None
    config = fast_yaml.lint.LintConfig(max_input_bytes=len(text.encode()) + 1)
    for diagnostic in fast_yaml.lint.lint(text, config=config):
        if diagnostic.code == "duplicate-key":
            line = diagnostic.span.start.line
            raise InputError(f"malformed YAML at line {line}: {diagnostic.message}", source=source)
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _pick_loader() -> YamlLoader:
    try:
        import fast_yaml  # noqa: F401
    except ImportError:
        return load_yaml_pyyaml
    return load_yaml_fast


load_yaml: YamlLoader = _pick_loader()
