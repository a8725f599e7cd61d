"""Output locations: which schemes are supported, normalization and containment."""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit

from saturn_async.exceptions import InputError

SUPPORTED_SCHEMES = "local paths and file:// URLs"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def normalize_location(value: str, *, source: str, field: str) -> str:
    """Return ``value`` as an absolute, normalized local path, or raise InputError.

    Relative paths are resolved against the current directory.
    """
    match = _SCHEME.match(value)
    if match:
        scheme = match.group(1).lower()
        if scheme != "file":
            raise InputError(
                f"unsupported scheme '{scheme}://' in {value!r} (supported: {SUPPORTED_SCHEMES})",
                source=source,
                field=field,
            )
        parts = urlsplit(value)
        if parts.netloc not in ("", "localhost"):
            raise InputError(
                f"file:// URL {value!r} names host {parts.netloc!r}; only local files work",
                source=source,
                field=field,
            )
        value = unquote(parts.path)
    if not value:
        raise InputError("empty path", source=source, field=field)
    return os.path.abspath(value)


def is_strictly_inside(base: str, path: str) -> bool:
    """True when normalized ``path`` lies below normalized ``base`` (and is not ``base``)."""
    prefix = base if base.endswith("/") else base + "/"
    return path.startswith(prefix) and len(path) > len(prefix)
