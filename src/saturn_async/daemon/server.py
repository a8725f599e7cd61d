"""The control socket: a Unix stream socket, mode 0600, that only serves its own user.

The socket is bound under a temporary name, made 0600, then renamed into place, so it is
never reachable with looser permissions; each connection's peer credentials
(SO_PEERCRED) are checked as well, since a socket's mode is not honoured everywhere.

Connections are bounded (see docs/operations.md, "Settings"): at most
``max_connections`` are open at once (one more is answered with an error and closed at
once); each read and each write of a connection may wait ``idle_timeout`` seconds; a
frame whose header announces more than ``max_frame_mb`` is refused from its header,
before any of it is read. A failure on one connection is logged and closes that
connection only; a failing ``accept`` (EMFILE) is logged and retried after a pause.

Sockets are read and written with ``anyio.wait_readable``/``wait_writable``, not with
anyio's socket streams: those register ``Future.set_result`` itself as the selector's
callback, so a cancellation (a timeout, or the shutdown after a drain) that reaches a
task waiting there in the same loop iteration as its socket turns readable made that
callback fail with ``InvalidStateError``, printed into the daemon's log.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc

from saturn_async.daemon.config import DaemonConfig
from saturn_async.daemon.log import DaemonLog, describe
from saturn_async.daemon.protocol import (
    Error,
    ProtocolError,
    Reply,
    Request,
    frame,
    receive_request,
)
from saturn_async.exceptions import IdleConnection, InputError

Handler = Callable[[Request], Awaitable[Reply]]
_PEERCRED = struct.Struct("3i")
_MB = 1 << 20
_ACCEPT_RETRY = 0.1
"""Seconds between tries of an ``accept`` that failed (EMFILE): the pending connection
waits in the backlog meanwhile."""


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


def peer_uid(sock: socket.socket) -> int:
    _pid, uid, _gid = _PEERCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    )
    return int(uid)


class Connection(anyio.abc.ByteStream):
    """One accepted connection: a non-blocking socket, each wait bounded by ``idle``."""

    def __init__(self, sock: socket.socket, idle: float) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.idle = idle

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while True:
            try:
                data = self.sock.recv(max_bytes)
            except BlockingIOError:
                await self._wait(anyio.wait_readable, "nothing received")
                continue
            if not data:
                raise anyio.EndOfStream
            return data

    async def send(self, item: bytes) -> None:
        view = memoryview(item)
        while view:
            try:
                view = view[self.sock.send(view) :]
            except BlockingIOError:
                await self._wait(anyio.wait_writable, "the client read nothing")

    async def _wait(self, wait: Callable[[socket.socket], Awaitable[None]], what: str) -> None:
        with anyio.move_on_after(self.idle) as scope:
            await wait(self.sock)
        if scope.cancelled_caught:
            raise IdleConnection(f"{what} for {self.idle:g} s (idle_timeout)")

    async def send_eof(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    async def aclose(self) -> None:
        self.sock.close()


class ControlServer:
    """Accepts connections on the control socket and answers one request on each."""

    def __init__(
        self,
        sock: socket.socket,
        handle: Handler,
        log: DaemonLog,
        config: Callable[[], DaemonConfig],
    ) -> None:
        self.sock = sock
        self.handle = handle
        self.log = log
        self.config = config
        """The daemon's settings now (the limits are reloaded by SIGHUP)."""
        self.open = 0
        self._large = anyio.Lock()
        self._refused_at_cap = 0
        self._accept_failing = False

    async def serve(self) -> None:
        """Accept and answer until cancelled; then close the socket, so that clients
        waiting in its backlog are refused at once."""
        self.sock.setblocking(False)
        with self.sock:
            async with anyio.create_task_group() as tg:
                await self._accept(tg)

    async def _accept(self, tg: anyio.abc.TaskGroup) -> None:
        while True:
            await anyio.wait_readable(self.sock)
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: the peer waits meanwhile
                if not self._accept_failing:
                    self._accept_failing = True
                    self.log(
                        "error",
                        "accept_failed",
                        f"cannot accept connections: {exc}; retrying every {_ACCEPT_RETRY:g} s",
                    )
                await anyio.sleep(_ACCEPT_RETRY)
                continue
            if self._accept_failing:
                self._accept_failing = False
                self.log("info", "accepting", "accepting connections again")
            self._admit(conn, tg)

    def _admit(self, conn: socket.socket, tg: anyio.abc.TaskGroup) -> None:
        cap = self.config().max_connections
        if self.open >= cap:
            self._refuse_at_cap(conn, cap)
            return
        if self._refused_at_cap:
            self.log(
                "info",
                "connections_capped",
                f"below the connection cap again; refused {self._refused_at_cap} connections",
            )
            self._refused_at_cap = 0
        self.open += 1
        tg.start_soon(self._converse, conn)

    def _refuse_at_cap(self, conn: socket.socket, cap: int) -> None:
        if not self._refused_at_cap:
            self.log(
                "warning",
                "connections_capped",
                f"{cap} connections are open (max_connections): closing new ones at once "
                "until one closes",
            )
        self._refused_at_cap += 1
        with conn, contextlib.suppress(OSError):  # a fresh socket's buffer holds the reply
            if peer_uid(conn) == os.getuid():
                conn.setblocking(False)
                conn.send(frame(Error(message=f"busy: {cap} connections are open")))

    async def _converse(self, conn: socket.socket) -> None:
        try:
            async with Connection(conn, self.config().idle_timeout) as stream:
                await self._answer(stream)
        except Exception as exc:  # a failure on one connection closes that connection only
            self.log("error", "connection_error", f"closed a connection: {describe(exc)}")
        finally:
            self.open -= 1

    async def _answer(self, stream: Connection) -> None:
        uid = peer_uid(stream.sock)
        if uid != os.getuid():
            self.log("warning", "refused", f"refused a connection from uid {uid}", uid=uid)
            return
        config = self.config()
        try:
            request = await receive_request(stream, int(config.max_frame_mb * _MB), self._large)
        except (ProtocolError, IdleConnection) as exc:
            self.log("warning", "bad_request", f"closed a connection: {exc}")
            with contextlib.suppress(OSError, IdleConnection):
                await stream.send(frame(Error(message=str(exc))))
            return
        except (anyio.EndOfStream, ConnectionError):
            self.log("warning", "bad_request", "a client left before its request was complete")
            return
        try:
            reply = await self.handle(request)
        except Exception as exc:  # a bug: this request fails, the daemon goes on
            self.log("error", "request_failed", f"{type(request).__name__}: {describe(exc)}")
            reply = Error(message=f"the request failed in the daemon: {describe(exc)}")
        try:
            await stream.send(frame(reply))
        except IdleConnection as exc:
            self.log("warning", "bad_request", f"could not send the reply: {exc}")
        except OSError as exc:
            self.log("warning", "bad_request", f"could not send the reply: {describe(exc)}")
