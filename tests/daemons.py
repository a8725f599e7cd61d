"""A real ``saturn daemon`` in a subprocess, for tests: start, wait on its socket, kill;
and raw access to its socket and journal, for what no ``saturn`` command would send."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import anyio
import msgspec

from conftest import CLI, wait_for
from saturn_async.daemon import journal, protocol
from saturn_async.daemon.client import request
from saturn_async.exceptions import DaemonError


class Daemon:
    """One daemon's state dir and socket; each ``start`` is a new incarnation of it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state_dir = root / "state"
        # A short directory: a socket path is limited to 107 bytes.
        self.socket_dir = Path(tempfile.mkdtemp(prefix="sd", dir="/tmp"))
        self.socket = str(self.socket_dir / "d.sock")
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []

    @property
    def address(self) -> list[str]:
        """The flags that point a client command at this daemon."""
        return ["--socket", self.socket]

    def command_line(self, *args: str) -> list[str]:
        return [*CLI, "daemon", "--state-dir", str(self.state_dir), *self.address, *args]

    def start(self, *args: str, env: dict[str, str] | None = None, wait: bool = True) -> None:
        log = self.root / f"daemon-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("wb") as stderr:
            self.proc = subprocess.Popen(
                self.command_line(*args),
                stderr=stderr,
                env={**os.environ, **(env or {})},
            )
        if wait:
            wait_for(self.answers, 30, "the daemon's socket")

    def answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the daemon exited {self.proc.returncode}: {self.log()}")
        try:
            self.ps()
        except DaemonError:
            return False
        return True

    def ask(self, message: protocol.Request) -> Any:
        return anyio.run(request, self.socket, message)

    def ps(self) -> protocol.Snapshot:
        snapshot = self.ask(protocol.Ps())
        assert isinstance(snapshot, protocol.Snapshot)
        return snapshot

    def log(self) -> str:
        return self.logs[-1].read_text() if self.logs else ""

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def close(self) -> None:
        """Stop it as an operator would: SIGTERM (drain), again (stop the runs), again
        (skip their grace), then SIGKILL; each step waits on the exit with a timeout."""
        if self.proc is not None:
            for sig, timeout in ((signal.SIGTERM, 0.5), (signal.SIGTERM, 2), (signal.SIGINT, 5)):
                if self.proc.poll() is not None:
                    break
                self.proc.send_signal(sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    def write_journal(self, records: list[journal.Record]) -> None:
        """A journal as an earlier incarnation (of any version) could have left it."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "journal").write_bytes(b"".join(journal.encode(r) for r in records))

    def connect(self) -> socket.socket:
        """A raw connection to the control socket; reads give up after 30 s."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(self.socket)
        return sock


def framed(message: object) -> bytes:
    """``message`` (any MessagePack-able value) as one frame of the control protocol."""
    data = msgspec.msgpack.encode(message)
    return len(data).to_bytes(4, "big") + data


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the daemon sends on ``sock`` until it closes the connection."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def reply_of(data: bytes) -> dict[str, Any]:
    """The one reply frame in ``data``, decoded."""
    assert len(data) >= 4 and int.from_bytes(data[:4], "big") == len(data) - 4, data[:64]
    reply: dict[str, Any] = msgspec.msgpack.decode(data[4:])
    return reply
