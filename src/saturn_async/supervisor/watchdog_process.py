"""The watchdog process (see :mod:`.watchdog`): waits for the end of its pipe, then stops
what carries its id unless its supervisor said bye. It imports nothing of saturn_async or
anyio before that, so it starts in the time of a bare interpreter."""

from __future__ import annotations

import os
import sys

_READ_SIZE = 4096


def said_bye(fd: int) -> bool:
    """Read ``fd`` to its end; whether the last thing said was ``bye``."""
    last = b""
    while data := os.read(fd, _READ_SIZE):
        last = (last + data)[-4:]
    return last == b"bye\n"


def main(argv: list[str]) -> None:
    grace, watchdog_id = float(argv[1]), argv[2]
    if said_bye(0):
        return
    import anyio

    from saturn_async.supervisor.watchdog import ID_VARIABLE, groups_marked, stop_groups

    groups = groups_marked(ID_VARIABLE.encode(), {watchdog_id.encode()})
    if groups:
        anyio.run(stop_groups, groups, grace)


if __name__ == "__main__":
    main(sys.argv)
