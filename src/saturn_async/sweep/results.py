"""Results backends of Saturn Run: where a sweep's task outputs end up.

* ``LocalDir`` (``directory:``): workers write the layout straight into the directory, so
  it must be a filesystem the workers share with the client (or this machine).
* ``S3`` (``url: s3://...``): workers write it to S3, logs as chunks (docs/storage.md).
* ``Dask`` (``directory:``, ``scheduler_address:``): workers send every object through a
  distributed Queue named after the sweep; the client (``saturn run`` while attached, or
  ``saturn collect``) receives it into the directory. Works with every executor. See
  docs/executors.md for the bound on what waits.
* ``Ray`` (``directory:``): the same through the RayExecutor's sweep actor.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import msgspec

from saturn_async.exceptions import InputError
from saturn_async.plugins import load_class
from saturn_async.spec.decode import convert_section
from saturn_async.spec.paths import is_remote, normalize_location
from saturn_async.spec.sweep import class_spec_of

ENTRY_POINTS = "saturn_async.results"


class DirectoryConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    class_spec: str
    directory: str


class QueueConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    class_spec: str
    directory: str
    scheduler_address: str | None = None
    """The scheduler holding the queue: default the DaskExecutor's, else
    ``$DASK_SCHEDULER_ADDRESS``."""


class UrlConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    class_spec: str
    url: str


class ResultsBackend:
    """Names the root the workers write under, and whether a queue carries it there."""

    Config: ClassVar[type[msgspec.Struct]]
    queue: ClassVar[Literal["dask", "ray"] | None] = None
    """The queue that carries outputs to the client, if any."""

    def __init__(self, root: str, config: Any) -> None:
        self.root = root
        """The batches' ``remote_output_path``: a local directory or an ``s3://`` URL."""
        self.scheduler_address: str | None = getattr(config, "scheduler_address", None)

    @classmethod
    def root_of(cls, config: Any, *, source: str, field: str) -> str:
        """The normalized root named by ``config`` (InputError when it is the wrong kind)."""
        raise NotImplementedError


class LocalDir(ResultsBackend):
    Config: ClassVar[type[msgspec.Struct]] = DirectoryConfig

    @classmethod
    def root_of(cls, config: Any, *, source: str, field: str) -> str:
        root = normalize_location(config.directory, source=source, field=f"{field}.directory")
        if is_remote(root):
            raise InputError(
                f"{config.directory!r} is a URL; use class_spec: S3 with url:",
                source=source,
                field=f"{field}.directory",
            )
        return root


class S3(ResultsBackend):
    Config = UrlConfig

    @classmethod
    def root_of(cls, config: Any, *, source: str, field: str) -> str:
        root = normalize_location(config.url, source=source, field=f"{field}.url")
        if not is_remote(root):
            raise InputError(
                f"{config.url!r} is not an s3:// URL", source=source, field=f"{field}.url"
            )
        return root


class Dask(LocalDir):
    Config: ClassVar[type[msgspec.Struct]] = QueueConfig
    queue = "dask"


class Ray(LocalDir):
    """Through the RayExecutor's sweep actor (so only with RayExecutor)."""

    queue = "ray"


_BUILTINS = {
    "LocalDir": "saturn_async.sweep.results:LocalDir",
    "S3": "saturn_async.sweep.results:S3",
    "Dask": "saturn_async.sweep.results:Dask",
    "Ray": "saturn_async.sweep.results:Ray",
}


def results_backend(section: dict[str, Any], *, source: str) -> ResultsBackend:
    """The backend a sweep file's ``results`` section names, with its root resolved."""
    field = "$.results"
    spec = class_spec_of(section, source=source, field=field)
    cls = load_class(spec, _BUILTINS, ENTRY_POINTS, source=source, field=f"{field}.class_spec")
    if not (isinstance(cls, type) and issubclass(cls, ResultsBackend)):
        raise InputError(f"{spec!r} is not a results backend", source=source, field=field)
    config = convert_section(section, cls.Config, source=source, field=field)
    return cls(cls.root_of(config, source=source, field=field), config)
