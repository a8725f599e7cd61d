"""The watchdog process (see :mod:`.watchdog`): reads what its supervisor says until end
of file, then stops the groups left. It imports nothing of saturn_async or anyio until it
has groups to stop, so it starts in the time of a bare interpreter."""

from __future__ import annotations

import os
import sys

_READ_SIZE = 65536


class Registrations:
    """What the supervisor said: the groups it runs, and spawns not answered yet."""

    def __init__(self) -> None:
        self.groups: dict[int, int] = {}
        """pgid -> leader start ticks."""
        self.unanswered = 0
        self.bye = False

    def read(self, fd: int) -> None:
        """Read from ``fd`` until end of file."""
        pending = b""
        while data := os.read(fd, _READ_SIZE):
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                self._apply(line)

    def _apply(self, line: bytes) -> None:
        kind = line[:1]
        if kind == b"+":
            pgid, ticks = line[1:].split(b" ")
            self.groups[int(pgid)] = int(ticks)
            self.unanswered = max(self.unanswered - 1, 0)
        elif kind == b"-":
            self.groups.pop(int(line[1:]), None)
        elif kind == b"?":
            self.unanswered += 1
        elif kind == b"!":
            self.unanswered = max(self.unanswered - 1, 0)
        elif line == b"bye":
            self.bye = True

    def ours(self, watchdog_id: str) -> set[int]:
        """The groups to stop (see :mod:`.watchdog`)."""
        from saturn_async.supervisor.watchdog import ID_VARIABLE, groups_marked

        groups = {pgid for pgid, ticks in self.groups.items() if _still_ours(pgid, ticks)}
        if self.unanswered and not self.bye:
            marker = ID_VARIABLE.encode()
            groups |= groups_marked(marker, {watchdog_id.encode()}, leaders_only=True)
        return groups


def _still_ours(pgid: int, ticks: int) -> bool:
    """False when ``pgid`` is now the number of another process (see :mod:`.watchdog`)."""
    from saturn_async.supervisor.process import start_ticks

    now = start_ticks(pgid)
    return now is None or not ticks or now == ticks


def main(argv: list[str]) -> None:
    grace, watchdog_id = float(argv[1]), argv[2]
    said = Registrations()
    said.read(0)
    if said.groups or said.unanswered:
        import anyio

        from saturn_async.supervisor.watchdog import stop_groups

        if ours := said.ours(watchdog_id):
            anyio.run(stop_groups, ours, grace)


if __name__ == "__main__":
    main(sys.argv)
