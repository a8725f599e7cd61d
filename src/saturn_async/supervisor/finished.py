"""A run's final status as recorded where its outputs went: what a batch that its engine
runs again after a worker died reads to skip the runs that finished."""

from __future__ import annotations

from saturn_async.storage.base import Storage
from saturn_async.storage.layout import ERROR, EVENTS, Layout, decode_events, parse_status
from saturn_async.storage.queue import QueueSink


async def recorded_outcome(
    storage: Storage, location: str, layout: Layout, submitted: str | None
) -> int | None:
    """The status code recorded at ``location``, or None when there is none.

    With ``submitted``, it counts only when the run's ``events`` begin with that time:
    on S3 an earlier sweep's outcome stays until a new one replaces it.
    """
    marker = await storage.get(f"{location}/{layout.marker}")
    if marker is None:
        return None
    if submitted is not None:
        events = decode_events(await storage.get(f"{location}/{EVENTS}") or b"")
        if not events or events[0].utctimestamp != submitted:
            return None
    if layout.name == "batch":
        return parse_status(marker, None, None)
    return parse_status(None, marker, await storage.get(f"{location}/{ERROR}"))


async def carried_outcome(sink: QueueSink, location: str, layout: Layout) -> int | None:
    """The status code of the finish marker the sink's channel carried for the run at
    ``location`` in this sweep, or None when it carried none. Only the marker is kept,
    so a Saturn Run failure reads as code 1 (its ``error`` is not): enough to skip it."""
    marker = await sink.recorded_final(f"{location}/{layout.marker}")
    if marker is None:
        return None
    if layout.name == "batch":
        return parse_status(marker, None, None)
    return parse_status(None, marker, None)
