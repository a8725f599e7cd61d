"""Every error saturn_async raises on purpose.

The hierarchy::

    SaturnError                 base of everything below; the CLI prints any of them
    │                           as one line and exits 2, having started nothing
    ├── InputError              bad input from the user: a file, a field or a flag
    ├── MissingExtraError       an optional dependency is not installed; names the extra
    ├── StorageError            storage refused an operation for good (no such bucket,
    │                           access denied), or stayed unreachable past the deadline
    ├── ExecutorError           an executor's backend refused an operation (the
    │                           Kubernetes API answered 403, say)
    └── DaemonError             the daemon cannot be reached, or refused a request

Outside that tree, each kept here so that every error has one home:

- ``NotRegularFile`` (an OSError): a path that names a link, a FIFO, a socket or a device
  where a regular file is read (a run's results).
- ``IdleConnection``: a daemon control connection sent or read nothing for
  ``idle_timeout``; that connection is closed.

Foreign errors (OSError from the filesystem, YAML parser errors, msgspec validation
errors) are translated where they enter and chained with ``from exc``.
"""

from __future__ import annotations


class SaturnError(Exception):
    """Base class of every error raised on purpose by saturn_async."""


class InputError(SaturnError):
    """Bad user input. ``source`` names the file (or flag), ``field`` the path inside it."""

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.message = message
        self.source = source
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [p for p in (self.source, self.field) if p]
        return ": ".join([*parts, self.message])


class MissingExtraError(SaturnError):
    """A feature needs an optional dependency; the message names the extra to install."""

    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(f"{feature} needs the extra: pip install 'saturn_async[{extra}]'")


class StorageError(SaturnError):
    """A storage operation failed for good; ``location`` and ``operation`` name it."""

    def __init__(self, location: str, operation: str, reason: str) -> None:
        self.location = location
        self.operation = operation
        self.reason = reason
        super().__init__(f"{location}: {operation}: {reason}")


class ExecutorError(SaturnError):
    """An executor's backend refused an operation; the message names it and the reason."""


class DaemonError(SaturnError):
    """The daemon cannot be reached, or refused a request; the message says which."""


class NotRegularFile(OSError):
    """A path names something else than a regular file (a link, a FIFO, a device...)."""


class IdleConnection(Exception):
    """The peer sent or read nothing for ``idle_timeout`` seconds."""
