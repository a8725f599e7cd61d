"""GNU parallel's ``--joblog``: one tab-separated line per finished attempt.

The columns are GNU parallel's: ``Seq`` (the run's 1-based position: among every run of
the batch files given, in order; among a sweep's tasks; among the run directories
found), ``Host`` (``:``, parallel's name for this machine: saturn records no host),
``Starttime`` (epoch seconds, 3 decimals), ``JobRuntime`` (seconds, 3 decimals, padded
to 10 as parallel does), ``Send`` (bytes of stdin: always 0, runs read ``/dev/null``),
``Receive`` (bytes of stdout; in the sweep layout stdout and stderr share ``log``),
``Exitval`` (the status saturn records: 128+N when killed by signal N), ``Signal`` (N,
else 0) and ``Command`` (tabs, newlines and backslashes escaped as ``\\t``, ``\\n``,
``\\\\``, so each attempt stays one line).

A line is written with one ``write`` on a file opened ``O_APPEND``, so ``tail -f`` sees
whole lines and writers never interleave. saturn appends to an existing joblog (one
that starts with the header) and refuses any other existing file, since it never
truncates what it did not create; GNU parallel would overwrite it.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from saturn_async.exceptions import InputError
from saturn_async.runs_index import RunRef, check_outside_runs, refuse_remote
from saturn_async.spec.models import Batch
from saturn_async.spec.paths import is_remote
from saturn_async.storage.layout import EVENTS, LOG, Event, decode_events, epoch_of
from saturn_async.storage.local import read_regular
from saturn_async.supervisor.lifecycle import CANNOT_START

if TYPE_CHECKING:
    from saturn_async.supervisor.lifecycle import RunLifecycle

HEADER = b"Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n"
HOST = ":"
"""GNU parallel's name for the local machine."""
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_END_TYPES = frozenset(("complete", "failed", "timeout", "terminated"))
"""Event types that end an attempt (with an ``exit_code``); ``failed`` without one is
an attempt that could not start."""


def line(
    seq: int, start: float, runtime: float, receive: int, exitval: int, signal: int, cmd: str
) -> bytes:
    """One joblog line, newline included."""
    command = cmd.translate(_ESCAPES)
    return (
        f"{seq}\t{HOST}\t{start:.3f}\t{runtime:10.3f}\t0\t{receive}\t{exitval}\t{signal}\t"
        f"{command}\n"
    ).encode(errors="backslashreplace")


class Joblog:
    """An open joblog, appended to one line per ``write``.

    A write that fails (a full disk) is reported once through ``report``; the runs go
    on, since the joblog is a view of their outputs, not part of them.
    """

    def __init__(self, fd: int, path: str, report: Callable[[str], None]) -> None:
        self.fd = fd
        self.path = path
        self.report = report
        self.failed = False

    @classmethod
    def open(
        cls,
        path: str,
        run_locations: Iterable[str],
        report: Callable[[str], None],
        source: str = "--joblog",
    ) -> Joblog:
        """Create ``path`` with the header, or open a joblog there to append to.

        InputError (nothing written) when it lies in a run's outputs, cannot be created,
        is not a regular file, or exists and does not start with the header.
        """
        check_outside_runs(path, run_locations, source)
        try:
            fd = os.open(path, _OPEN_FLAGS, 0o666)
        except OSError as exc:
            reason = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
            raise InputError(f"{path}: cannot open for appending: {reason}", source=source) from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise InputError(f"{path}: not a regular file", source=source)
            if info.st_size == 0:
                os.write(fd, HEADER)
            elif os.pread(fd, len(HEADER), 0) != HEADER:
                raise InputError(
                    f"{path} exists and is not a joblog (its first line is not GNU "
                    "parallel's header); saturn appends to a joblog and overwrites nothing",
                    source=source,
                )
        except OSError as exc:
            os.close(fd)
            raise InputError(f"{path}: {exc.strerror}", source=source) from exc
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, path, report)

    def write(self, data: bytes) -> None:
        """Append ``data`` (whole lines) with one write."""
        if self.failed or not data:
            return
        try:
            written = os.write(self.fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, "short write")
        except OSError as exc:
            self.failed = True
            self.report(f"could not write the joblog {self.path}: {exc.strerror}; no more lines")

    def close(self) -> None:
        os.close(self.fd)


def attempt_line(seq: int, cmd: str, events: Sequence[Event], receive: int) -> bytes:
    """The line of the attempt whose end is ``events[-1]`` (an end event, or the
    ``failed`` event of an attempt that could not start)."""
    end = events[-1]
    if end.exit_code is None:
        return line(seq, epoch_of(end.utctimestamp), 0.0, 0, CANNOT_START, 0, cmd)
    started = next(
        (e for e in reversed(events) if e.type == "started" and e.attempt == end.attempt), None
    )
    runtime = end.wall_seconds or 0.0
    start = epoch_of(started.utctimestamp) if started else epoch_of(end.utctimestamp) - runtime
    return line(seq, start, runtime, receive, end.exit_code, end.signal or 0, cmd)


def lines_from_events(
    seq: int, events: Sequence[Event], cmd: str | None, receive: Callable[[int, bool], int]
) -> bytes:
    """The lines of every attempt a run's events record. ``receive(attempt, last)`` is
    the size of that attempt's stdout. Tasks terminated before they started have none."""
    cmd = cmd or next((e.cmd for e in events if e.cmd), None) or ""
    ends = [
        i
        for i, e in enumerate(events)
        if (e.type in _END_TYPES and e.exit_code is not None)
        or (e.type == "failed" and e.exit_code is None and e.attempt is not None)
    ]
    out = []
    for i in ends:
        end = events[i]
        size = receive(end.attempt or 1, i == ends[-1]) if end.exit_code is not None else 0
        out.append(attempt_line(seq, cmd, events[: i + 1], size))
    return b"".join(out)


def lines_of_run_dir(seq: int, run_dir: str, stdout: str, cmd: str | None) -> bytes:
    """The lines of a local run directory's attempts, from its ``events``; the stdout
    sizes from ``stdout`` (the last attempt) and ``stdout.N`` (attempt N, kept at a
    retry). Nothing when the events cannot be read."""
    try:
        events = decode_events(read_regular(os.path.join(run_dir, EVENTS)))
    except (OSError, ValueError):
        return b""

    def receive(attempt: int, last: bool) -> int:
        name = stdout if last else f"{stdout}.{attempt}"
        try:
            return os.stat(os.path.join(run_dir, name), follow_symlinks=False).st_size
        except OSError:
            return 0

    return lines_from_events(seq, events, cmd, receive)


class AttemptLogger:
    """The supervisor's ``on_attempt_end`` hook: writes the line of each attempt that
    ends. ``seqs`` maps each run's output location to its Seq."""

    def __init__(self, joblog: Joblog, seqs: dict[str, int]) -> None:
        self.joblog = joblog
        self.seqs = seqs

    def __call__(self, lifecycle: RunLifecycle) -> None:
        events = lifecycle.events
        receive = lifecycle.outputs.stdout_size() if events[-1].exit_code is not None else 0
        seq = self.seqs.get(lifecycle.run_dir, 0)
        self.joblog.write(attempt_line(seq, lifecycle.run.cmd, events, receive))


def open_attempt_logger(path: str | None, batches: Sequence[Batch]) -> AttemptLogger | None:
    """The hook writing ``path`` for runs of ``batches`` (their order gives Seq), or None
    without a path. InputError as :meth:`Joblog.open`."""
    if path is None:
        return None
    seqs: dict[str, int] = {}
    for batch in batches:
        for run in batch.runs:
            assert run.remote_output_path is not None
            seqs.setdefault(run.remote_output_path, len(seqs) + 1)
    return AttemptLogger(Joblog.open(path, seqs, _warn), seqs)


def _warn(message: str) -> None:
    print(f"saturn: {message}", file=sys.stderr)


class TaskLogger:
    """Writes a sweep task's lines once it has a status, from its events (the client of
    ``saturn run`` sees tasks finish, not attempts end). ``seqs`` maps locations to Seq."""

    def __init__(self, joblog: Joblog, seqs: dict[str, int]) -> None:
        self.joblog = joblog
        self.seqs = seqs

    def __call__(self, location: str) -> None:
        self.joblog.write(lines_of_run_dir(self.seqs.get(location, 0), location, LOG, None))


def open_task_logger(path: str | None, root: str, tasks: Sequence[str]) -> TaskLogger | None:
    """The joblog writer of a sweep's ``tasks`` (their order gives Seq), or None without
    a path. InputError for an ``s3://`` results root (the events would be one GET per
    task) and as :meth:`Joblog.open`."""
    if path is None:
        return None
    if is_remote(root):
        raise InputError(
            "needs a local results directory (for S3 results, copy them with `aws s3 "
            "sync`, then run `saturn status --joblog FILE DIR` on the copy)",
            source="--joblog",
        )
    seqs = {location: seq for seq, location in enumerate(tasks, 1)}
    return TaskLogger(Joblog.open(path, seqs, _warn), seqs)


def write_outputs_joblog(path: str, runs: Sequence[RunRef]) -> None:
    """Write the lines of the finished ``runs`` (local ones: InputError for S3), in Seq
    order, to the joblog ``path``. InputError as :meth:`Joblog.open`."""
    refuse_remote(runs, "--joblog")
    joblog = Joblog.open(path, (location for location, _, _ in runs), _warn)
    try:
        for seq, (location, cmd, layout) in enumerate(runs, 1):
            joblog.write(lines_of_run_dir(seq, location, layout.stdout, cmd))
    finally:
        joblog.close()
