"""Read run outcomes back from outputs: what succeeded, what failed, what is left."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import msgspec

from saturn_async.spec import load_batch_file
from saturn_async.storage.layout import EVENTS, STATUS_CODE, STDERR, STDOUT, decode_events
from saturn_async.storage.local import read_status_code

_RUN_MARKERS = frozenset((STATUS_CODE, EVENTS, STDOUT, STDERR))


class FailedRunReport(msgspec.Struct):
    path: str
    status_code: int
    cmd: str | None


@dataclass
class StatusReport:
    succeeded: int = 0
    not_finished: list[str] = field(default_factory=list)
    failed: list[FailedRunReport] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.succeeded + len(self.failed) + len(self.not_finished)

    def add(self, path: str, cmd: str | None) -> None:
        code = read_status_code(path)
        if code == 0:
            self.succeeded += 1
        elif code is None:
            self.not_finished.append(path)
        else:
            self.failed.append(FailedRunReport(path, code, cmd or _command_from_events(path)))


def status_of(path: str) -> StatusReport:
    """Status of every run of a batch file, or of every run found under a directory."""
    report = StatusReport()
    if os.path.isdir(path):
        for run_dir in _run_dirs(os.path.abspath(path)):
            report.add(run_dir, None)
    else:
        for run in load_batch_file(path).runs:
            assert run.remote_output_path is not None
            report.add(run.remote_output_path, run.cmd)
    return report


def _run_dirs(root: str) -> Iterator[str]:
    """Directories holding a run's outputs; the search does not descend into runs."""
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    if any(e.name in _RUN_MARKERS for e in entries):
        yield root
        return
    for entry in sorted(entries, key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=False):
            yield from _run_dirs(entry.path)


def _command_from_events(run_dir: str) -> str | None:
    try:
        with open(os.path.join(run_dir, EVENTS), "rb") as f:
            events = decode_events(f.read())
    except (OSError, ValueError):
        return None
    return next((e.cmd for e in events if e.cmd), None)
