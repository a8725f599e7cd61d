"""Read job/batch and recipe files into Python objects, with errors naming file and field."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from saturn_async.exceptions import InputError
from saturn_async.spec.input_file import read_input
from saturn_async.spec.json_keys import TOO_DEEP, check_duplicate_keys

T = TypeVar("T")

_AT = re.compile(r"^(?P<message>.*?)(?: - at `(?P<field>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]+)`$")
_BOM = b"\xef\xbb\xbf"


def load_yaml(text: str, source: str) -> Any:
    """:func:`saturn_async.spec.yaml_loader.load_yaml`, imported on first use: importing
    PyYAML costs about 20 ms at every start, and JSON batch files never need it."""
    from saturn_async.spec.yaml_loader import load_yaml as load

    return load(text, source)


def is_yaml_path(path: str | Path, data: bytes) -> bool:
    """YAML by suffix; files with another suffix are JSON when they start with ``{``."""
    suffix = Path(path).suffix.lower()
    if suffix in (".yaml", ".yml"):
        return True
    if suffix == ".json":
        return False
    return data.lstrip()[:1] != b"{"


def decode_document(path: str | Path, data: bytes, type_: type[T]) -> T:
    """Decode ``data`` (JSON or YAML, by :func:`is_yaml_path`) into ``type_``.

    A UTF-8 byte order mark at the start is skipped; a JSON key repeated inside one
    object is an error, as it is in YAML.
    """
    source = str(path)
    data = _without_bom(data)
    if not is_yaml_path(path, data):
        try:
            decoded = msgspec.json.decode(data, type=type_)
        except msgspec.ValidationError as exc:
            raise _field_error(exc, source, type_) from exc
        except msgspec.DecodeError as exc:
            raise InputError(_json_syntax_message(exc, data), source=source) from exc
        except RecursionError as exc:
            raise InputError(TOO_DEEP, source=source) from exc
        if isinstance(decoded, msgspec.Struct):
            check_duplicate_keys(data, decoded, source)
        return decoded
    obj = load_yaml(_text(data, source), source)
    try:
        return msgspec.convert(obj, type=type_)
    except msgspec.ValidationError as exc:
        raise _field_error(exc, source, type_) from exc
    except RecursionError as exc:
        raise InputError(TOO_DEEP, source=source) from exc


def convert_section(obj: object, type_: type[T], *, source: str, field: str) -> T:
    """Convert an already decoded section (``$.executor``, say) into ``type_``.

    Errors name ``source`` and the field path below ``field``.
    """
    try:
        return msgspec.convert(obj, type=type_)
    except msgspec.ValidationError as exc:
        raise _field_error(exc, source, type_, prefix=field) from exc


def load_yaml_mapping(path: str | Path, max_size: int | None = None) -> dict[str, Any]:
    """Load a YAML file whose top level must be a mapping (a recipe)."""
    data = _without_bom(read_input(path, max_size))
    obj = load_yaml(_text(data, str(path)), str(path))
    if not isinstance(obj, dict):
        raise InputError(
            f"expected a mapping at the top level, got {_kind(obj)}", source=str(path), field="$"
        )
    return obj


def _text(data: bytes, source: str) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", source=source) from exc


def _without_bom(data: bytes) -> bytes:
    """``data`` less a UTF-8 byte order mark at its start (editors on Windows add one)."""
    return data[len(_BOM) :] if data.startswith(_BOM) else data


def _kind(obj: object) -> str:
    return "nothing" if obj is None else type(obj).__name__


def _field_error(
    exc: msgspec.ValidationError, source: str, type_: type, prefix: str = "$"
) -> InputError:
    match = _AT.match(str(exc))
    assert match is not None  # the pattern matches any string
    message, field = match.group("message"), match.group("field") or "$"
    field = prefix + field[1:]
    if missing := _MISSING.match(message):
        return InputError(
            "required field is missing", source=source, field=f"{field}.{missing['name']}"
        )
    if unknown := _UNKNOWN.match(message):
        name = unknown["name"]
        hint = _suggest(name, type_)
        return InputError(f"unknown field{hint}", source=source, field=f"{field}.{name}")
    return InputError(message[:1].lower() + message[1:], source=source, field=field)


def _suggest(name: str, type_: type) -> str:
    close = difflib.get_close_matches(name, sorted(_field_names(msgspec.inspect.type_info(type_))))
    return f" (did you mean {close[0]!r}?)" if close else ""


def _field_names(info: msgspec.inspect.Type) -> set[str]:
    """Every field name of every Struct reachable from ``info``."""
    if isinstance(info, msgspec.inspect.StructType):
        names = {f.encode_name for f in info.fields}
        for f in info.fields:
            names |= _field_names(f.type)
        return names
    if isinstance(info, msgspec.inspect.UnionType):
        return set().union(*(_field_names(t) for t in info.types))
    if isinstance(info, msgspec.inspect.ListType):
        return _field_names(info.item_type)
    return set()


def _json_syntax_message(exc: msgspec.DecodeError, data: bytes) -> str:
    text = str(exc)
    byte = re.search(r"\(byte (\d+)\)", text)
    if not byte:
        return f"malformed JSON: {text}"
    offset = int(byte.group(1))
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    reason = text.split("(byte", maxsplit=1)[0].removeprefix("JSON is malformed:").strip()
    return f"malformed JSON at line {line}, column {column}: {reason}"
