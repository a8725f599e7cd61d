"""Every error saturn_async raises on purpose.

The hierarchy::

    SaturnError                 base of everything below
    └── InputError              bad input from the user: a file, a field or a flag.
                                The CLI prints it as one line and exits 2, having
                                started and overwritten nothing.

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
