"""The live display of ``saturn batch`` on a real terminal, read back as a screen."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyte
import pytest

from conftest import CLI

COLUMNS, LINES = 120, 40
# A run that waits until the test creates the file `go` in the batch's directory.
GATED = "while [ ! -e go ]; do sleep 0.2; done; echo gated"


class Terminal:
    """``saturn ARGS...`` on a pseudo-terminal of COLUMNS x LINES, its output replayed
    into a screen model."""

    def __init__(self, cwd: Path, *args: str) -> None:
        leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        self.proc = subprocess.Popen(
            [*CLI, *args],
            cwd=cwd,
            stdin=follower,
            stdout=follower,
            stderr=follower,
            env={**env, "TERM": "xterm"},
            start_new_session=True,
        )
        os.close(follower)
        self.leader = leader
        self.screen = pyte.Screen(COLUMNS, LINES)
        self.stream = pyte.ByteStream(self.screen)
        self.closed = False

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.leader], [], [], timeout)
        if not ready:
            return
        try:
            data = os.read(self.leader, 65536)
        except OSError:  # EIO: the other side closed
            data = b""
        if not data:
            self.closed = True
            return
        self.stream.feed(data)

    def wait_for_screen(self, condition: Callable[[str], bool], timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while not condition(self.text()):
            if self.closed or time.monotonic() > deadline:
                raise AssertionError(f"the screen never showed what was expected:\n{self.text()}")
            self._read(0.1)
        return self.text()

    def final_screen(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while not self.closed:
            assert time.monotonic() < deadline, "saturn did not end"
            self._read(0.1)
        assert self.proc.wait(timeout=timeout) == 0
        return self.text()

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        os.close(self.leader)


@pytest.fixture
def terminal() -> Iterator[Callable[..., Terminal]]:
    started: list[Terminal] = []

    def start(cwd: Path, *args: str) -> Terminal:
        started.append(Terminal(cwd, *args))
        return started[-1]

    yield start
    for each in started:
        each.close()


def test_running_rows_show_commands_and_how_many_are_left_out(
    tmp_path: Path, write_job, terminal
) -> None:
    job = write_job([f"{GATED} {i}" for i in range(40)], nprocs=40)
    shown = terminal(tmp_path, "batch", str(job))
    screen = shown.wait_for_screen(lambda s: "40 running" in s and "+28 more" in s)
    assert "command" in screen and "[ ! -e go ]" in screen
    assert str(tmp_path / "out") not in screen  # commands, not output paths
    (tmp_path / "go").touch()
    shown.final_screen()


def test_the_last_frame_shows_the_end(tmp_path: Path, write_job, terminal) -> None:
    job = write_job([GATED] * 3, nprocs=3)
    shown = terminal(tmp_path, "batch", str(job))
    shown.wait_for_screen(lambda s: "3 running" in s)
    (tmp_path / "go").touch()
    screen = shown.final_screen()
    # Before: the frame of the last refresh (`0 succeeded ... 3 running`) stayed on screen.
    assert "3 succeeded  0 failed  0 skipped  0 running  0 pending of 3" in screen
    assert "3 running" not in screen
    assert "3 succeeded, 0 failed, 0 skipped, 0 not started in " in screen
