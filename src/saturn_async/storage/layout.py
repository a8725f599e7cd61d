"""The per-run output layouts and the ``events`` file format.

Two layouts, one per original tool, differ only in file names and in how the outcome is
written:

* ``batch`` (``sc batch`` of Saturn Cloud's massively parallel jobs): ``stdout``,
  ``stderr``, ``events``, ``results/`` and, written last, ``status_code`` (the exit status
  as a number).
* ``sweep`` (``saturn run``, Saturn Run): ``log`` (stdout and stderr interleaved as written),
  ``events``, ``results/``, ``error`` (the exit status, only on failure) and, written last,
  ``status`` (``success`` or ``failure``).

``events`` is YAML (``events:`` then one list item per line); each item is a JSON flow
mapping, which any YAML 1.2 parser reads and which is cheap to write and read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from saturn_async.spec.decode import load_yaml

STDOUT = "stdout"
STDERR = "stderr"
EVENTS = "events"
RESULTS = "results"
STATUS_CODE = "status_code"
LOG = "log"
STATUS = "status"
ERROR = "error"
SUCCESS = "success"
FAILURE = "failure"
RESULTS_NOT_SAVED = 125
"""The status of a run that exited 0 but some of whose results could not be saved (an
unreadable file, one that vanished, a name storage refuses); ``not_saved`` events name
them."""
FINAL_MARKERS = (STATUS_CODE, STATUS)
"""The files whose presence means a run has finished and recorded everything else."""
LEASE = ".saturn-lease"
"""The lease file in a run's directory, and the lease object under an s3:// run."""
RUN_FILES = frozenset((STATUS_CODE, STATUS, EVENTS, STDOUT, STDERR, LOG, LEASE))
"""The entries of which one, at least, is in every run's directory (started or done)."""
LayoutName = Literal["batch", "sweep"]


@dataclass(frozen=True, slots=True)
class Layout:
    """File names of a run's outputs and how its outcome is written."""

    name: LayoutName
    stdout: str
    stderr: str

    @property
    def logs(self) -> tuple[str, ...]:
        """The log files, each once (the sweep layout interleaves both streams)."""
        return (self.stdout,) if self.stdout == self.stderr else (self.stdout, self.stderr)

    @property
    def marker(self) -> str:
        """The finish marker, written last: a run has a final status once it exists."""
        return STATUS_CODE if self.name == "batch" else STATUS

    def final_writes(self, events: list[Event], status_code: int) -> list[tuple[str, bytes | None]]:
        """What to write, in order, to record the outcome; None means remove that file.

        The last item is the finish marker, so a reader that sees it sees the rest.
        """
        writes: list[tuple[str, bytes | None]] = [(EVENTS, encode_events(events))]
        if self.name == "batch":
            return [*writes, (STATUS_CODE, b"%d\n" % status_code)]
        if status_code == 0:
            return [*writes, (ERROR, None), (STATUS, SUCCESS.encode() + b"\n")]
        return [*writes, (ERROR, b"%d\n" % status_code), (STATUS, FAILURE.encode() + b"\n")]


LAYOUTS: dict[str, Layout] = {
    "batch": Layout("batch", STDOUT, STDERR),
    "sweep": Layout("sweep", LOG, LOG),
}


def parse_status(
    status_code: bytes | None, status: bytes | None, error: bytes | None
) -> int | None:
    """The exit status recorded by either layout, or None when there is none (or garbled)."""
    try:
        if status_code is not None:
            return int(status_code.strip())
        if status is None:
            return None
        word = status.strip().decode()
        if word == SUCCESS:
            return 0
        if word == FAILURE:
            return int(error.strip()) if error and error.strip() else 1
    except (ValueError, UnicodeDecodeError):
        pass
    return None


class Event(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One entry of a run's ``events`` file."""

    type: str
    utctimestamp: str
    cmd: str | None = None
    attempt: int | None = None
    rank: int | None = None
    pid: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    wall_seconds: float | None = None
    cpu_user_seconds: float | None = None
    cpu_system_seconds: float | None = None
    max_rss_kib: int | None = None
    """Peak memory: the cgroup's (whole tree) of a capped run, else the largest peak RSS
    of its processes; left out when not known (see supervisor/usage.py)."""
    max_rss_at_most_kib: int | None = None
    """Where ``max_rss_kib`` is not known: the bound rusage gives on it."""
    memory_limit_kib: int | None = None
    """The cap of a run an ``oom`` event says its cap killed."""
    error: str | None = None
    path: str | None = None
    """The entry of ``results/`` a ``skipped`` or ``not_saved`` event is about."""
    delay_seconds: float | None = None
    """How long a ``retry`` waited after the failed attempt (``retry_delay``)."""
    halted_by: str | None = None
    """The run whose failure set off the halt that stopped this one (``halted``)."""

    @property
    def peak_kib(self) -> int | None:
        """The peak memory an end event records, or the bound on it where it is unknown."""
        return self.max_rss_kib if self.max_rss_kib is not None else self.max_rss_at_most_kib


_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(Event)


def utcnow() -> str:
    return datetime.now(UTC).isoformat()


def epoch_of(timestamp: str) -> float:
    """An event's ``utctimestamp`` as epoch seconds (0.0 when garbled)."""
    try:
        return datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return 0.0


def encode_events(events: list[Event]) -> bytes:
    return b"events:\n" + b"".join(b"- " + _encoder.encode(e) + b"\n" for e in events)


def decode_events(data: bytes) -> list[Event]:
    """Read an ``events`` file written by :func:`encode_events` or by any YAML writer."""
    try:
        lines = data.splitlines()
        if lines and lines[0].strip() == b"events:":
            return [_event_decoder.decode(line[2:]) for line in lines[1:] if line.strip()]
    except msgspec.DecodeError:
        pass
    document: Any = load_yaml(data.decode(errors="replace"), EVENTS)
    items = document.get("events", []) if isinstance(document, dict) else []
    return [
        msgspec.convert(item, Event, strict=False)
        for item in items
        if isinstance(item, dict) and "type" in item
    ]
