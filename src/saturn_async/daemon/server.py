"""The control socket: a Unix stream socket, mode 0600, that only serves its own user.

The socket is bound under a temporary name, made 0600, then renamed into place, so it is
never reachable with looser permissions; each connection's peer credentials
(SO_PEERCRED) are checked as well, since a socket's mode is not honoured everywhere.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc

from saturn_async.daemon.protocol import Error, ProtocolError, Reply, Request, receive_request, send
from saturn_async.exceptions import InputError

Handler = Callable[[Request], Awaitable[Reply]]
_PEERCRED = struct.Struct("3i")


def bind_control_socket(path: str) -> socket.socket:
    """A listening socket at ``path``; InputError if a live daemon already answers there."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if os.path.lexists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # left behind by a daemon that died
        else:
            raise InputError("another daemon is listening on this socket", source=path)
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    try:
        sock.bind(temporary)
        os.chmod(temporary, 0o600)
        sock.listen(128)
        os.replace(temporary, path)
    except OSError:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return sock


def peer_uid(stream: anyio.abc.SocketStream) -> int:
    raw: socket.socket = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    _pid, uid, _gid = _PEERCRED.unpack(
        raw.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    )
    return int(uid)


async def serve(sock: socket.socket, handle: Handler, refused: Callable[[int], None]) -> None:
    """Answer one request per connection until cancelled."""
    listener = await anyio.abc.SocketListener.from_socket(sock)

    async def connection(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            uid = peer_uid(stream)
            if uid != os.getuid():
                refused(uid)
                return
            try:
                request = await receive_request(stream)
            except ProtocolError as exc:
                await send(stream, Error(message=str(exc)))
                return
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return
            reply = await handle(request)
            with contextlib.suppress(anyio.BrokenResourceError, OSError):
                await send(stream, reply)

    async with listener:
        await listener.serve(connection)
