"""Duplicate keys in JSON documents, refused as YAML's are.

msgspec keeps the last of two equal keys without a word. Checking every object of a
million-run file in Python would cost more than decoding it, so the check counts first:

* every member of a JSON object has one ``:`` after its key; the others are inside
  strings. So the document's ``:`` count is its member count plus the colons of its
  strings (a colon written ``\\u003a`` is not counted: such a file takes the slow path);
* encoding the decoded Struct again (msgspec, ``omit_defaults``) writes one ``:`` per
  member it kept plus the same string colons.

Equal counts prove no member was lost, so no key was duplicated. A document with
members that encoding leaves out (``"timeout": null``, a field set to its default) has
more colons than its encoding: it is decoded again into a shape that keeps those
(:func:`_shape_of`) and counted again. Only a document whose counts still differ (a
duplicate, or a ``\\u003a``) is parsed again with :mod:`json`, which names the first
duplicate's field path.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

import msgspec

from saturn_async.exceptions import InputError

TOO_DEEP = "nested too deeply (Python's decoders take about 990 levels)"
_CHUNK = 16_384
"""Items of a long list encoded at a time: little memory, few calls."""


def check_duplicate_keys(data: bytes, decoded: msgspec.Struct, source: str) -> None:
    """Raise InputError naming the field when JSON ``data`` (decoded into ``decoded``)
    repeats a key inside one object."""
    escaped_colon = b"\\" in data and (b"\\u003a" in data or b"\\u003A" in data)
    if not escaped_colon:
        colons = data.count(b":")
        if colons == _encoded_colons(decoded):
            return
        # Members encoding left out (nulls, defaults): count again on a decode that keeps
        # every member it is given.
        try:
            shape = msgspec.json.decode(data, type=_shape_of(type(decoded)))
        except RecursionError as exc:
            raise InputError(TOO_DEEP, source=source) from exc
        if colons == _encoded_colons(shape):
            return
    field = _first_duplicate(data, source)
    if field is not None:
        raise InputError("duplicate key", source=source, field=field)


def _encoded_colons(decoded: msgspec.Struct) -> int:
    """``:`` in the JSON encoding of ``decoded``, long lists encoded a chunk at a time."""
    encoder = msgspec.json.Encoder()
    buffer = bytearray()
    long_lists = {
        name: value
        for name in decoded.__struct_fields__
        if isinstance(value := getattr(decoded, name), list) and len(value) > _CHUNK
    }
    shell = msgspec.structs.replace(decoded, **{name: [] for name in long_lists})
    encoder.encode_into(shell, buffer)
    colons = buffer.count(b":")
    for items in long_lists.values():
        for start in range(0, len(items), _CHUNK):
            encoder.encode_into(items[start : start + _CHUNK], buffer)
            colons += buffer.count(b":")
    return colons


@functools.cache
def _shape_of(type_: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """A Struct with the field names of ``type_`` that keeps any value a document gives
    (``null`` and defaults included) and leaves out only absent fields: encoded, it has
    one member per distinct key. Lists of Structs keep their shape; the rest is Any."""
    info = msgspec.inspect.type_info(type_)
    assert isinstance(info, msgspec.inspect.StructType)
    fields: list[tuple[str, Any, Any]] = []
    for field in info.fields:
        item = field.type.item_type if isinstance(field.type, msgspec.inspect.ListType) else None
        kind: Any = Any
        if isinstance(item, msgspec.inspect.StructType):
            kind = list[_shape_of(item.cls)]  # type: ignore[misc]
        fields.append((field.encode_name, kind | msgspec.UnsetType, msgspec.UNSET))
    return msgspec.defstruct(f"{type_.__name__}Shape", fields, kw_only=True)


class _Members(list[tuple[str, Any]]):
    """A JSON object as the list of its members, duplicates kept."""


def _first_duplicate(data: bytes, source: str) -> str | None:
    """The field path of the first repeated key in document order, or None."""
    try:
        document = json.loads(data, object_pairs_hook=_Members)
    except RecursionError as exc:
        raise InputError(TOO_DEEP, source=source) from exc
    for path, members in _objects(document):
        seen: set[str] = set()
        for key, _ in members:
            if key in seen:
                return f"{path}.{key}"
            seen.add(key)
    return None


def _objects(document: Any) -> Iterator[tuple[str, _Members]]:
    """Every object of ``document`` with its field path, in document order (no recursion:
    nesting is as deep as the file says)."""
    stack: list[tuple[str, Any]] = [("$", document)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, _Members):
            yield path, node
            stack.extend((f"{path}.{key}", value) for key, value in reversed(node))
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", value) for i, value in reversed(list(enumerate(node))))
