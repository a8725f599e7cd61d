"""Find a backend class by ``class_spec``: a built-in name, ``module:attr``, or an entry point.

Executors and results backends are both chosen this way (docs/executors.md). A built-in
whose optional dependency is missing raises MissingExtraError naming the extra.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from saturn_async.exceptions import InputError


def load_class(spec: str, builtins: dict[str, str], group: str, *, source: str, field: str) -> type:
    """Resolve ``spec``; ``builtins`` maps names to ``module:attr`` inside saturn_async."""
    if spec in builtins:
        return _import(builtins[spec], source=source, field=field)
    if ":" in spec:
        return _import(spec, source=source, field=field)
    for entry in entry_points(group=group):
        if entry.name == spec:
            loaded = entry.load()
            if not isinstance(loaded, type):
                raise InputError(
                    f"entry point {spec!r} of {group} is not a class", source=source, field=field
                )
            return loaded
    known = sorted([*builtins, *(e.name for e in entry_points(group=group))])
    raise InputError(
        f"unknown class_spec {spec!r} (known: {', '.join(known)}; or module:attr)",
        source=source,
        field=field,
    )


def load_object(spec: str, *, source: str, field: str) -> object:
    """Import ``module:attr``; failures are an InputError naming ``source`` and ``field``."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InputError(f"{spec!r} is not of the form module:attr", source=source, field=field)
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"cannot load {spec!r}: {exc}", source=source, field=field) from exc


def _import(spec: str, *, source: str, field: str) -> type:
    loaded = load_object(spec, source=source, field=field)
    if not isinstance(loaded, type):
        raise InputError(f"{spec!r} is not a class", source=source, field=field)
    return loaded
