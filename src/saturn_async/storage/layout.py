"""The per-run output layout and the ``events`` file format.

A run's directory holds ``stdout``, ``stderr``, ``events``, ``results/`` and, written last,
``status_code``. ``events`` is YAML (``events:`` then one list item per line); each item is
a JSON flow mapping, which any YAML 1.2 parser reads and which is cheap to write and read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from saturn_async.spec.yaml_loader import load_yaml

STDOUT = "stdout"
STDERR = "stderr"
EVENTS = "events"
RESULTS = "results"
STATUS_CODE = "status_code"


class Event(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One entry of a run's ``events`` file."""

    type: str
    utctimestamp: str
    cmd: str | None = None
    attempt: int | None = None
    rank: int | None = None
    pid: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    wall_seconds: float | None = None
    cpu_user_seconds: float | None = None
    cpu_system_seconds: float | None = None
    max_rss_kib: int | None = None
    error: str | None = None


_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(Event)


def utcnow() -> str:
    return datetime.now(UTC).isoformat()


def encode_events(events: list[Event]) -> bytes:
    return b"events:\n" + b"".join(b"- " + _encoder.encode(e) + b"\n" for e in events)


def decode_events(data: bytes) -> list[Event]:
    """Read an ``events`` file written by :func:`encode_events` or by any YAML writer."""
    try:
        lines = data.splitlines()
        if lines and lines[0].strip() == b"events:":
            return [_event_decoder.decode(line[2:]) for line in lines[1:] if line.strip()]
    except msgspec.DecodeError:
        pass
    document: Any = load_yaml(data.decode(errors="replace"), EVENTS)
    items = document.get("events", []) if isinstance(document, dict) else []
    return [
        msgspec.convert(item, Event, strict=False)
        for item in items
        if isinstance(item, dict) and "type" in item
    ]
