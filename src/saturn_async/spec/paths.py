"""Output locations: which schemes are supported, normalization and containment."""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit

from saturn_async.exceptions import InputError

SUPPORTED_SCHEMES = "local paths, file:// and s3:// URLs"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# S3 bucket naming rules: 3-63 characters, lowercase letters, digits, dots and hyphens.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
RESERVED = ".saturn"
"""The directory under a batch's root where saturn keeps its own records (the ledger)."""


def normalize_location(value: str, *, source: str, field: str) -> str:
    """Return ``value`` as an absolute local path or a normalized ``s3://`` URL.

    Relative paths are resolved against the current directory. Raises InputError.
    """
    match = _SCHEME.match(value)
    if match:
        scheme = match.group(1).lower()
        if scheme == "s3":
            return _normalize_s3(value, source=source, field=field)
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


def _normalize_s3(value: str, *, source: str, field: str) -> str:
    bucket, _, key = value[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket):
        raise InputError(
            f"{value!r} does not start with a valid S3 bucket name", source=source, field=field
        )
    parts = [part for part in key.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise InputError(
            f"{value!r} has '.' or '..' in its key; S3 keys are not resolved",
            source=source,
            field=field,
        )
    return "/".join([f"s3://{bucket}", *parts])


def is_remote(location: str) -> bool:
    """True for a location that is not on this machine's filesystem (``s3://``)."""
    return location.startswith("s3://")


def is_strictly_inside(base: str, path: str) -> bool:
    """True when normalized ``path`` lies below normalized ``base`` (and is not ``base``)."""
    prefix = base if base.endswith("/") else base + "/"
    return path.startswith(prefix) and len(path) > len(prefix)
