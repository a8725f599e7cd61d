"""The daemon's control protocol: msgspec MessagePack frames over a Unix socket.

Each message is a 4-byte big-endian length, then a MessagePack map. Every request
carries ``protocol`` (:data:`PROTOCOL_VERSION`); the daemon answers a request of another
version with an :class:`Error` naming both, so old clients fail with a clear line.
One request, one reply, per connection. The message types are documented in
docs/operations.md.
"""

from __future__ import annotations

import struct

import anyio
import anyio.abc
import msgspec

from saturn_async.spec.models import Batch

PROTOCOL_VERSION = 1
MAX_FRAME = 1 << 31
"""The largest reply a client accepts; the daemon caps requests lower (``max_frame_mb``)."""
LARGE_FRAME = 1 << 20
"""Requests larger than this are read one at a time (see :func:`receive_request`)."""
_LENGTH = struct.Struct(">I")


class Request(msgspec.Struct, tag_field="type", kw_only=True):
    protocol: int = PROTOCOL_VERSION


class SubmittedBatch(msgspec.Struct, kw_only=True):
    source: str
    """The batch file as the submitter named it (absolute path or URL)."""
    batch: Batch
    """Resolved: every run has its absolute output path."""


class Submit(Request, tag="submit"):
    batches: list[SubmittedBatch]


class Ps(Request, tag="ps"):
    pass


class Cancel(Request, tag="cancel"):
    target: str
    """A batch id (``b7``), a run id (``b7.12``), a batch file as submitted, or a run's
    output path."""


class Drain(Request, tag="drain"):
    pass


class Reply(msgspec.Struct, tag_field="type", kw_only=True):
    pass


class Error(Reply, tag="error"):
    message: str


class Accepted(Reply, tag="accepted"):
    ids: list[str]
    runs: int


class BatchInfo(msgspec.Struct, kw_only=True):
    id: str
    source: str
    submitted: str
    total: int
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    lost: int
    """Attempts lost to a daemon crash (their runs were run again)."""
    quarantined: str | None = None
    """Why none of the batch's runs start any more (its replay, or a run's start,
    failed); its queued runs wait for ``saturn cancel``."""


class RunInfo(msgspec.Struct, kw_only=True):
    id: str
    rank: int
    pid: int
    attempt: int
    seconds: float
    output: str
    cmd: str


class Snapshot(Reply, tag="snapshot"):
    pid: int
    version: str
    state: str
    """``running``, ``paused`` (see ``paused_reason``), ``draining`` or ``stopping``."""
    paused_reason: str | None
    nprocs: int
    queued: int
    succeeded: int
    failed: int
    batches: list[BatchInfo]
    running: list[RunInfo]


class Cancelled(Reply, tag="cancelled"):
    queued: int
    running: int


class Draining(Reply, tag="draining"):
    running: int
    queued: int


class _Version(msgspec.Struct):
    protocol: int = 0


_request_decoder = msgspec.msgpack.Decoder(Submit | Ps | Cancel | Drain)
_reply_decoder = msgspec.msgpack.Decoder(Error | Accepted | Snapshot | Cancelled | Draining)
_version_decoder = msgspec.msgpack.Decoder(_Version)
_encoder = msgspec.msgpack.Encoder()


class ProtocolError(Exception):
    """A frame that is not a message of this protocol; the text says why."""


def frame(message: Request | Reply) -> bytes:
    """``message`` as it goes on the wire: its length, then its MessagePack."""
    data = _encoder.encode(message)
    return _LENGTH.pack(len(data)) + data


async def _receive_frame(
    stream: anyio.abc.ByteReceiveStream, max_frame: int, large: anyio.Lock | None = None
) -> bytes:
    header = await _receive_exactly(stream, _LENGTH.size)
    (length,) = _LENGTH.unpack(header)
    if length > max_frame:
        raise ProtocolError(f"a frame of {length} bytes is over the limit of {max_frame}")
    if large is None or length <= LARGE_FRAME:
        return await _receive_exactly(stream, length)
    async with large:
        return await _receive_exactly(stream, length)


async def _receive_exactly(stream: anyio.abc.ByteReceiveStream, size: int) -> bytes:
    parts = bytearray()
    while len(parts) < size:
        parts += await stream.receive(min(size - len(parts), 1 << 20))
    return bytes(parts)


async def receive_request(
    stream: anyio.abc.ByteReceiveStream, max_frame: int, large: anyio.Lock
) -> Request:
    """The request on ``stream``. A frame over ``max_frame`` bytes is refused from its
    header, before any of it is read; frames over :data:`LARGE_FRAME` are read while
    holding ``large``, so at most one large frame is in memory at a time."""
    data = await _receive_frame(stream, max_frame, large)
    try:
        version = _version_decoder.decode(data).protocol
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ProtocolError(f"not a request: {exc}") from exc
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"the client speaks protocol {version}, this daemon speaks {PROTOCOL_VERSION}; "
            "use the saturn of the daemon's version"
        )
    try:
        request: Request = _request_decoder.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ProtocolError(f"not a request: {exc}") from exc
    return request


async def receive_reply(stream: anyio.abc.ByteReceiveStream) -> Reply:
    data = await _receive_frame(stream, MAX_FRAME)
    try:
        reply: Reply = _reply_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"not a reply of protocol {PROTOCOL_VERSION}: {exc}") from exc
    return reply
