"""Output locations: which schemes are supported, normalization and containment."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from saturn_async.exceptions import InputError

if TYPE_CHECKING:
    from saturn_async.spec.models import Batch

SUPPORTED_SCHEMES = "local paths, file:// and s3:// URLs"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# S3 bucket naming rules: 3-63 characters, lowercase letters, digits, dots and hyphens.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
RESERVED = ".saturn"
"""The directory under a batch's root where saturn keeps its own records (the ledger)."""
NAME_MAX = 255
"""Linux: the longest file name (one path component), in bytes."""
PATH_MAX = 4096 - 1
"""Linux: the longest path a system call takes, in bytes (4096 with its NUL)."""
S3_KEY_MAX = 1024
"""The longest S3 object key, in UTF-8 bytes."""
CONTROL_CHARACTERS = frozenset(chr(c) for c in (*range(32), 127))
"""What no S3 key (its XML listings) and no one-line name may hold."""
_CONTROL_BUT_NUL = tuple(CONTROL_CHARACTERS - {"\0"})
OWN_NAMES_MARGIN = 64
"""Bytes left below an output location for the names saturn writes there
(``status_code.tmp-<16 hex>``, ``stdout.2/000001``, ``.saturn/ledger/...``)."""


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
        if "?" in value or "#" in value:
            raise InputError(
                f"file:// URL {value!r} has a query or fragment, which a local path has not "
                "(write '?' as %3F and '#' as %23)",
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
    return local_path(value, source=source, field=field)


def local_path(value: str, *, source: str, field: str) -> str:
    """``value`` as an absolute local path (:func:`absolute`), if the kernel takes it (no
    NUL, no name over NAME_MAX, not near PATH_MAX); else an InputError."""
    return check_length(absolute(_without_nul(value, source, field)), source, field)


def absolute(value: str) -> str:
    """``os.path.abspath(value)``, but starting with one '/': POSIX lets a system give a
    leading '//' a meaning of its own, and ``abspath`` keeps it; Linux does not, so
    ``//x`` is ``/x``, and one spelling keeps the string comparisons of paths right."""
    path = os.path.abspath(value)
    return path[1:] if path.startswith("//") else path


def check_length(location: str, source: str, field: str) -> str:
    """``location`` (normalized) if the kernel or S3 takes it and the names saturn writes
    below it; else an InputError."""
    if len(location) <= NAME_MAX // 4:  # not even 255 bytes of UTF-8: nothing to check
        return location
    if is_remote(location):
        key = location[len("s3://") :].partition("/")[2]
        # Sized even when not UTF-8: ``_normalize_s3`` refuses that next (``key_problem``).
        size, limit, what = len(key.encode(errors="surrogatepass")), S3_KEY_MAX, "an S3 key"
    else:
        data = _path_bytes(location, source, field)
        longest = max(map(len, data.split(b"/")))
        if longest > NAME_MAX:
            raise InputError(
                f"has a name of {longest:,} bytes; Linux allows {NAME_MAX}",
                source=source,
                field=field,
            )
        size, limit, what = len(data), PATH_MAX, "a local path"
    if size > limit - OWN_NAMES_MARGIN:
        raise InputError(
            f"is {size:,} bytes long; {what} may be at most {limit - OWN_NAMES_MARGIN:,} "
            f"to leave room for the names saturn writes below it (the limit is {limit:,})",
            source=source,
            field=field,
        )
    return location


def _path_bytes(location: str, source: str, field: str) -> bytes:
    """The bytes the kernel gets for ``location``: a name that is not UTF-8 (from the
    command line, say) is its own bytes again (``os.fsencode``), as for a short one."""
    try:
        return os.fsencode(location)
    except UnicodeEncodeError:
        raise InputError(
            "holds a character that no file name can (a lone surrogate)", source=source, field=field
        ) from None


def key_problem(key: str) -> str | None:
    """Why S3 would refuse ``key``, or break listing it, or None: a key that is not UTF-8
    (a file name in another encoding), is over 1,024 bytes, or holds a control character
    (which S3's XML listings cannot carry)."""
    try:
        size = len(key.encode())
    except UnicodeEncodeError:
        return "its name is not UTF-8, which S3 keys must be"
    if size > S3_KEY_MAX:
        return f"its S3 key is {size:,} bytes; S3 takes at most {S3_KEY_MAX:,}"
    if not CONTROL_CHARACTERS.isdisjoint(key):
        return "its name holds a control character, which S3 listings cannot carry"
    return None


def _without_nul(value: str, source: str, field: str) -> str:
    if "\0" in value:
        raise InputError("holds a NUL byte, which no path can", source=source, field=field)
    return value


def _normalize_s3(value: str, *, source: str, field: str) -> str:
    bucket, _, key = _without_nul(value, source, field)[len("s3://") :].partition("/")
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
    location = check_length("/".join([f"s3://{bucket}", *parts]), source, field)
    problem = key_problem(location[len("s3://") + len(bucket) + 1 :])
    if problem is not None:
        raise InputError(f"{value!r} cannot be stored on S3: {problem}", source=source, field=field)
    return location


def is_remote(location: str) -> bool:
    """True for a location that is not on this machine's filesystem (``s3://``)."""
    return location.startswith("s3://")


def plainly_inside(base: str, paths: list[str]) -> bool:
    """True when every one of ``paths`` is ``base/PART``, PART a relative path without an
    empty, ``.`` or ``..`` component, a NUL (on S3: a control character) or ``RESERVED``
    first, and short enough (``check_length``): then each is what ``normalize_location``
    makes of it, and lies strictly inside normalized ``base``, outside saturn's records.

    A few scans in C of the paths joined by NULs, for a batch at once. False says only
    that the path-by-path checks must decide (and name the first run that fails).
    """
    if not paths:
        return True
    prefix = base if base.endswith("/") else base + "/"
    joined = "\0" + "\0".join(paths) + "\0"
    count = len(paths)
    if joined.count("\0") != count + 1 or joined.count("\0" + prefix) != count:
        return False  # a NUL in a path, or a path that does not start with the prefix
    if is_remote(base) and any(character in joined for character in _CONTROL_BUT_NUL):
        return False  # a control character in a key (``key_problem``)
    # ``base`` is normalized: a '//' beyond its own (s3://) is an empty component, a
    # '/' after the prefix or one at the end an empty PART or component.
    if joined.count("//") != count * prefix.count("//") or "/\0" in joined:
        return False
    if "\0" + prefix + "/" in joined or ("/." in joined and _dotted(joined, prefix)):
        return False
    longest = max(map(len, paths))
    if longest - len(prefix) <= NAME_MAX // 4 and longest <= (S3_KEY_MAX - OWN_NAMES_MARGIN) // 4:
        return True  # no name over NAME_MAX, no path or key too long
    try:
        for path in paths:
            check_length(path, "", "")
    except InputError:
        return False
    return True


def _dotted(joined: str, prefix: str) -> bool:
    """Whether a path of ``joined`` (each starting with ``prefix``) has a ``.`` or ``..``
    component, or ``RESERVED`` right after the prefix."""
    return any(f"/{name}{end}" in joined for name in (".", "..") for end in ("/", "\0")) or any(
        f"\0{prefix}{RESERVED}{end}" in joined for end in ("/", "\0")
    )


def is_strictly_inside(base: str, path: str) -> bool:
    """True when normalized ``path`` lies below normalized ``base`` (and is not ``base``)."""
    prefix = base if base.endswith("/") else base + "/"
    return path.startswith(prefix) and len(path) > len(prefix)


def real_output_paths(batch: Batch) -> Iterator[str]:
    """Each run's output path of a resolved ``batch``, local ones as real paths: the
    batch root is resolved (``os.path.realpath``) once, each run keeps its part below it
    (runs lie inside their root); ``s3://`` URLs are already normalized."""
    root = batch.remote_output_path
    assert root is not None, "batches are resolved before they are compared"
    real = real_root(root)
    # Each run keeps '/PART'; below a root that is (or resolves to) '/', no '//PART'.
    cut, real = (0 if root == "/" else len(root)), ("" if real == "/" else real)
    for run in batch.runs:
        path = run.remote_output_path
        assert path is not None
        yield real + path[cut:]


def real_root(root: str) -> str:
    """A normalized batch root as its runs' real paths start: ``os.path.realpath`` of a
    local one, an ``s3://`` URL as it is."""
    return root if is_remote(root) else os.path.realpath(root)
