"""The daemon's own log on stderr: ``text`` lines, or one JSON object a line."""

from __future__ import annotations

import contextlib
import sys
from typing import Literal

import msgspec

from saturn_async.storage.layout import utcnow

_encoder = msgspec.json.Encoder()


class DaemonLog:
    def __init__(self, format: Literal["text", "json"] = "text") -> None:
        self.format = format

    def __call__(self, level: str, event: str, message: str, **fields: object) -> None:
        """One entry: ``event`` is a stable name to filter on, ``message`` for people."""
        if self.format == "json":
            entry = {"time": utcnow(), "level": level, "event": event, "message": message}
            line = _encoder.encode({**entry, **fields}).decode()
        else:
            extra = " ".join(f"{k}={v}" for k, v in fields.items())
            line = f"{utcnow()} {level} {message}" + (f" ({extra})" if extra else "")
        # With stderr gone (a closed pipe) the daemon goes on without its log.
        with contextlib.suppress(OSError):
            print(line, file=sys.stderr, flush=True)


def describe(exc: BaseException) -> str:
    """An unexpected exception in one line: its type and message."""
    return f"{type(exc).__name__}: {exc}"
