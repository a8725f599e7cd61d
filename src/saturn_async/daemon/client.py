"""The CLI's side of the control socket: one request, one reply."""

from __future__ import annotations

import contextlib

import anyio

from saturn_async.daemon.protocol import Error, ProtocolError, Reply, Request, frame, receive_reply
from saturn_async.exceptions import DaemonError


async def request(socket_path: str, message: Request) -> Reply:
    data = frame(message)  # before connecting: the daemon closes idle connections
    try:
        stream = await anyio.connect_unix(socket_path)
    except (FileNotFoundError, ConnectionRefusedError):
        raise DaemonError(
            f"{socket_path}: no daemon is listening (start one: saturn daemon)"
        ) from None
    except OSError as exc:
        raise DaemonError(f"{socket_path}: cannot reach the daemon: {exc.strerror}") from exc
    async with stream:
        # A daemon at its connection cap answers and closes before reading anything, so
        # the send may fail; its answer is read all the same.
        with contextlib.suppress(anyio.BrokenResourceError, OSError):
            await stream.send(data)
        try:
            reply = await receive_reply(stream)
        except ProtocolError as exc:
            raise DaemonError(f"{socket_path}: {exc}") from exc
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError) as exc:
            raise DaemonError(
                f"{socket_path}: the daemon closed the connection (is it run by another user?)"
            ) from exc
    if isinstance(reply, Error):
        raise DaemonError(f"the daemon refused: {reply.message}")
    return reply
