"""Read run outcomes back from outputs: what succeeded, what failed, what was lost (its
supervisor died: see supervisor/lease.py), what is left.

A sweep's outcomes come from its ledger (the summaries its supervisors wrote, see
supervisor/summary.py) where it has them, and from each task's files where it does not.
Everything here is a coroutine: the caller's event loop runs it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import anyio
import anyio.to_thread
import msgspec

from saturn_async.spec import load_batch_file
from saturn_async.spec.paths import is_remote, normalize_location
from saturn_async.storage import storage_for
from saturn_async.storage.layout import EVENTS, RUN_FILES, Event, decode_events
from saturn_async.storage.ledger import LedgerReader, read_ledger
from saturn_async.storage.local import read_regular, read_status_code
from saturn_async.supervisor.lease import Holder, lost_holder
from saturn_async.sweep.state import SweepRecord


class FailedRunReport(msgspec.Struct, omit_defaults=True):
    path: str
    status_code: int
    cmd: str | None
    halted_by: str | None = None
    """The run whose failure set off the halt that stopped this one (local outputs)."""


_STOPPED = frozenset((143, 137))
"""Statuses of runs stopped by TERM or KILL: a halt's among them."""


class LostRunReport(msgspec.Struct):
    """A run whose last attempt's owner died before recording a final status."""

    path: str
    host: str
    pid: int


@dataclass
class StatusReport:
    succeeded: int = 0
    not_finished: list[str] = field(default_factory=list)
    """Never started, or running with a live owner."""
    failed: list[FailedRunReport] = field(default_factory=list)
    lost: list[LostRunReport] = field(default_factory=list)
    halted_by: list[str] = field(default_factory=list)
    """The runs that set off the halts that stopped some of these (or the sweep), each once."""

    @property
    def total(self) -> int:
        return self.succeeded + len(self.failed) + len(self.not_finished) + len(self.lost)

    def add(self, path: str, code: int | None, cmd: str | None) -> None:
        if code == 0:
            self.succeeded += 1
        elif code is None:
            holder = None if is_remote(path) else lost_holder(path)
            if holder is None:
                self.not_finished.append(path)
            else:
                self.lost.append(LostRunReport(path, holder.host, holder.pid))
        else:
            halted_by = None
            # Only a run stopped by a signal can have been halted: read its events.
            if not is_remote(path) and (cmd is None or code in _STOPPED):
                events = _events_of(path)
                cmd = cmd or next((e.cmd for e in events if e.cmd), None)
                halted_by = next((e.halted_by for e in events if e.type == "halted"), None)
            self.failed.append(FailedRunReport(path, code, cmd, halted_by))
            self.add_halt(halted_by)

    def add_halt(self, trigger: str | None) -> None:
        if trigger is not None and trigger not in self.halted_by:
            self.halted_by.append(trigger)

    async def find_lost_remotely(self, root: str) -> None:
        """For runs under an s3:// ``root``: move the not finished runs whose lease
        object says their owner is dead to ``lost`` (one GET per such run)."""
        if not is_remote(root) or not self.not_finished:
            return
        lost = await _lost_under(root, self.not_finished)
        self.not_finished = [p for p in self.not_finished if p not in lost]
        self.lost.extend(LostRunReport(p, h.host, h.pid) for p, h in sorted(lost.items()))


async def status_reader(root: str) -> Callable[[str], int | None]:
    """A lookup of recorded status codes for runs under ``root``.

    Local runs: each run's ``status_code`` file. Remote runs: the root's ledger, read
    once (see storage/ledger.py), so a million runs do not cost a million requests.
    """
    if not is_remote(root):
        return read_status_code
    return (await _ledger_of(root)).get


async def without_status(root: str, tasks: list[str]) -> list[str]:
    """Those of ``tasks`` (under ``root``) without a recorded status (in a thread: one
    read per local task)."""
    lookup = await status_reader(root)
    return await anyio.to_thread.run_sync(lambda: [task for task in tasks if lookup(task) is None])


async def sweep_outcomes(root: str, submitted: str) -> dict[str, int | None]:
    """Task location relative to ``root`` -> status code, from the ledger segments of the
    sweep submitted at ``submitted`` (those of an earlier submission, or unreadable
    ones, are left out)."""
    async with storage_for(root) as storage:
        return await LedgerReader(storage, root, submitted).new_runs()


async def _ledger_of(root: str) -> dict[str, int]:
    async with storage_for(root) as storage:
        return await read_ledger(storage, root)


async def _lost_under(root: str, locations: list[str]) -> dict[str, Holder]:
    from saturn_async.storage.s3 import S3Storage
    from saturn_async.supervisor.s3_lease import lost_holders

    async with storage_for(root) as storage:
        assert isinstance(storage, S3Storage)
        return await lost_holders(storage, locations)


async def status_of(path: str, max_input_size: int | None = None) -> StatusReport:
    """Status of every run of a batch file, or of every run found under a directory.

    For an ``s3://`` root, the runs are those its ledger knows (finished ones); lost runs
    are told apart for a batch file's runs, and for local directories.
    """
    report = StatusReport()
    if is_remote(path):
        root = normalize_location(path, source="PATH", field="")
        for location, code in sorted((await _ledger_of(root)).items()):
            report.add(location, code, None)
    elif await anyio.Path(path).is_dir():
        await anyio.to_thread.run_sync(_add_run_dirs, report, path)
    else:
        batch = await anyio.to_thread.run_sync(
            partial(load_batch_file, path, max_input_size=max_input_size)
        )
        assert batch.remote_output_path is not None
        lookup = await status_reader(batch.remote_output_path)

        def add_all() -> None:
            for run in batch.runs:
                assert run.remote_output_path is not None
                report.add(run.remote_output_path, lookup(run.remote_output_path), run.cmd)

        await anyio.to_thread.run_sync(add_all)
        await report.find_lost_remotely(batch.remote_output_path)
    return report


def _add_run_dirs(report: StatusReport, root: str) -> None:
    for run_dir in run_dirs(os.path.abspath(root)):
        report.add(run_dir, read_status_code(run_dir), None)


async def status_of_sweep(record: SweepRecord) -> StatusReport:
    """Status of a sweep's tasks: from its ledger where it names them, else (in a thread)
    from each task's own files."""
    root = record.results_root
    # On S3 the lookup is the whole ledger already: no second read of it.
    recorded = {} if is_remote(root) else await sweep_outcomes(root, record.created)
    lookup = await status_reader(record.results_root)
    report = StatusReport()

    def add_all() -> None:
        # A million tasks: the common case (a summary says success) stays inline.
        cut = len(root) + 1
        succeeded = 0
        for location in record.tasks:
            code = recorded.get(location[cut:])
            if code == 0:
                succeeded += 1
            else:
                report.add(location, lookup(location) if code is None else code, None)
        report.succeeded += succeeded

    await anyio.to_thread.run_sync(add_all)
    await report.find_lost_remotely(record.results_root)
    return report


def run_dirs(root: str) -> Iterator[str]:
    """Directories holding a run's outputs; the search does not descend into runs."""
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    if any(e.name in RUN_FILES for e in entries):
        yield root
        return
    for entry in sorted(entries, key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=False):
            yield from run_dirs(entry.path)


def _events_of(run_dir: str) -> list[Event]:
    try:
        return decode_events(read_regular(os.path.join(run_dir, EVENTS)))
    except (OSError, ValueError):
        return []
