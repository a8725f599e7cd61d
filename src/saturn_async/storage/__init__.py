"""Storage backends, chosen by the scheme of a location: local paths or ``s3://``."""

from __future__ import annotations

from saturn_async.exceptions import MissingExtraError
from saturn_async.spec.paths import is_remote
from saturn_async.storage.base import Sink, Storage, StoredObject


def storage_for(location: str) -> Storage:
    """A new (not yet entered) storage backend for ``location``."""
    if not is_remote(location):
        from saturn_async.storage.local import LocalStorage

        return LocalStorage()
    try:
        from saturn_async.storage.s3 import S3Storage
    except ImportError as exc:
        raise MissingExtraError("s3:// locations", "s3") from exc
    return S3Storage()


__all__ = ["Sink", "Storage", "StoredObject", "storage_for"]
