"""Where a daemon keeps its state and its control socket.

Several daemons on one machine (one per GPU group, say) differ by ``--name``: each has
its own state directory and socket. ``--state-dir`` and ``--socket`` (or
``$SATURN_DAEMON_STATE_DIR`` and ``$SATURN_DAEMON_SOCKET``) override the defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from saturn_async.exceptions import InputError

# sockaddr_un.sun_path is 108 bytes, including the terminating NUL.
_MAX_SOCKET_PATH = 107


@dataclass(frozen=True, slots=True)
class DaemonPaths:
    state_dir: str
    socket: str

    @property
    def journal(self) -> str:
        return os.path.join(self.state_dir, "journal")

    @property
    def lock(self) -> str:
        return os.path.join(self.state_dir, "lock")


def daemon_paths(name: str, state_dir: str | None = None, socket: str | None = None) -> DaemonPaths:
    """The state directory and socket of the daemon called ``name``.

    State: ``$XDG_STATE_HOME/saturn_async/daemon-NAME`` (``~/.local/state/…``).
    Socket: ``$XDG_RUNTIME_DIR/saturn_async/daemon-NAME.sock`` when that variable is set,
    else ``daemon.sock`` in the state directory.
    """
    state_dir = state_dir or os.environ.get("SATURN_DAEMON_STATE_DIR")
    if not state_dir:
        state_home = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
        state_dir = os.path.join(state_home, "saturn_async", f"daemon-{name}")
    state_dir = os.path.abspath(state_dir)
    socket = socket or os.environ.get("SATURN_DAEMON_SOCKET")
    if not socket:
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        socket = (
            os.path.join(runtime, "saturn_async", f"daemon-{name}.sock")
            if runtime
            else os.path.join(state_dir, "daemon.sock")
        )
    socket = os.path.abspath(socket)
    if len(os.fsencode(socket)) > _MAX_SOCKET_PATH:
        raise InputError(
            f"the socket path is {len(os.fsencode(socket))} bytes, over the limit of "
            f"{_MAX_SOCKET_PATH}; choose a shorter one with --socket",
            source="--socket",
        )
    return DaemonPaths(state_dir, socket)
