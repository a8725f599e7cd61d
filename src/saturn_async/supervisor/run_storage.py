"""Where a supervisor's runs write, and what storage already recorded of them.

One :class:`RunStorage` per supervisor holds where shipped outputs go (S3 storage, or
on a Dask/Ray worker the queue sink every output goes to), the ledger of outcomes, and
the staging directory; it gives each run its outputs and its lease, and answers whether a
run is to be skipped (``--skip-completed``, an engine's rerun).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio.abc

from saturn_async.exceptions import StorageError
from saturn_async.spec.models import Batch, Run
from saturn_async.spec.paths import is_remote
from saturn_async.storage import Sink, Storage, local, storage_for
from saturn_async.storage.layout import LAYOUTS, RESULTS
from saturn_async.storage.ledger import LedgerWriter, read_ledger
from saturn_async.storage.queue import QueueSink
from saturn_async.supervisor.finished import carried_outcome, recorded_outcome
from saturn_async.supervisor.lease import RunLease
from saturn_async.supervisor.outputs import LocalOutputs, RunOutputs, ShippedOutputs

T = TypeVar("T")
InThread = Callable[..., Awaitable[T]]


def default_staging_dir() -> str:
    """Where runs with remote outputs write before shipping: ``$SATURN_STAGING_DIR``, else
    ``$TMPDIR/saturn_async-staging-UID``. It is used only if it is ours and 0700 (see
    :func:`saturn_async.storage.local.open_private_directory`)."""
    return os.environ.get("SATURN_STAGING_DIR") or os.path.join(
        tempfile.gettempdir(), f"saturn_async-staging-{os.getuid()}"
    )


class RunStorage:
    """The outputs, leases and earlier outcomes of one supervisor's runs."""

    def __init__(
        self,
        *,
        skip_completed: bool,
        staging_dir: str | None,
        sink: QueueSink | None,
        log_chunk_seconds: float,
        report: Callable[[str], None],
        submitted: str | None = None,
    ) -> None:
        """``sink``, when given, receives every run's outputs, local paths included
        (they are then names the client that receives the queue writes).
        ``submitted`` stamps the ledger's segments (the sweep's submission)."""
        self.submitted = submitted
        self.skip_completed = skip_completed
        self.staging_dir = staging_dir or default_staging_dir()
        self.sink = sink
        self.storage: Storage | None = None
        """The storage of the remote roots (opened for the first), when there is no sink."""
        self.log_chunk_seconds = log_chunk_seconds
        self.report = report
        self.ledger: LedgerWriter | None = None
        self._staging_fd: int | None = None
        self._ledger_statuses: dict[str, int] = {}
        self._roots: set[str] = set()

    def close_staging(self) -> None:
        if self._staging_fd is not None:
            os.close(self._staging_fd)
            self._staging_fd = None

    async def open_roots(
        self,
        batches: list[Batch] | tuple[Batch, ...],
        stack: contextlib.AsyncExitStack,
        background: anyio.abc.TaskGroup,
    ) -> None:
        """Open storage for the batches' shipped output roots and check each once (roots
        already checked are not checked again). The staging directory is opened (and
        checked to be ours: InputError if not) first. ``stack`` holds the storage and
        ``background`` the ledger's periodic flush."""
        roots = sorted({self.shipped_root(b) for b in batches} - {"", *self._roots})
        if not roots:
            return
        if self._staging_fd is None:
            self._staging_fd = local.open_private_directory(self.staging_dir)
        if self.sink is None and self.storage is None:
            self.storage = await stack.enter_async_context(storage_for(roots[0]))
        target = self._target()
        for root in roots:
            await target.check(root)
        if self.ledger is None:
            self.ledger = LedgerWriter(target, self.submitted)
            background.start_soon(self.ledger.flush_every)
        if self.skip_completed and self.storage is not None:  # a sink cannot be read
            for root in roots:
                self._ledger_statuses.update(await read_ledger(self.storage, root))
        self._roots.update(roots)

    async def flush_ledger(self) -> None:
        """Write what the ledger holds; a failure is reported, not raised."""
        if self.ledger is None:
            return
        try:
            await self.ledger.flush()
        except StorageError as exc:
            self.report(
                f"could not write the ledger: {exc}; --skip-completed will run "
                "the runs it misses again (their status_code is stored)"
            )

    def outputs_for(self, batch: Batch, run: Run) -> RunOutputs:
        """Where ``run`` writes: its own directory, or staging shipped to storage."""
        location = run.remote_output_path
        assert location is not None and batch.remote_output_path is not None
        layout = LAYOUTS[batch.layout]
        if not self.ships(location):
            return LocalOutputs(
                batch.remote_output_path,
                location,
                run.local_results_dir or f"{location}/{RESULTS}",
                layout,
            )
        assert self.ledger is not None and self._staging_fd is not None
        return ShippedOutputs(
            self._target(),
            location,
            (self.staging_dir, self._staging_fd),
            run.local_results_dir,
            self.log_chunk_seconds,
            self.ledger,
            batch.remote_output_path,
            layout,
        )

    def lease_for(self, location: str, outputs: RunOutputs, grace: float) -> RunLease:
        """The lease of the run at ``location``: an flock in the directory it writes into
        and, for s3:// outputs, the lease object, expiring a while after ``grace`` (none
        for a queue sink, whose client alone writes the runs' directories)."""
        remote = None
        if is_remote(location) and self.sink is None:
            from saturn_async.storage.s3 import S3Storage
            from saturn_async.supervisor.s3_lease import S3Lease, lease_ttl

            assert isinstance(self.storage, S3Storage)
            remote = S3Lease(self.storage, location, lease_ttl(grace))
        return RunLease(outputs.directory.open, remote)

    async def succeeded_before(self, location: str, in_thread: InThread[int | None]) -> bool:
        if self.ships(location):
            return self._ledger_statuses.get(location) == 0
        return await in_thread(local.read_status_code, location) == 0

    async def finished_before(
        self, batch: Batch, location: str, submitted: str, in_thread: InThread[int | None]
    ) -> bool:
        """Whether the run has a final status of this sweep, of any code (a queue sink
        asks its channel, which remembers the finish markers it carried)."""
        if self.sink is not None:
            return await carried_outcome(self.sink, location, LAYOUTS[batch.layout]) is not None
        if not self.ships(location):
            return await in_thread(local.read_status_code, location) is not None
        assert self.storage is not None and self.ledger is not None
        remote = is_remote(location)
        layout = LAYOUTS[batch.layout]
        code = await recorded_outcome(self.storage, location, layout, submitted if remote else None)
        if code is not None and remote and batch.remote_output_path is not None:
            # The dead worker may have died before flushing it: followers read the ledger.
            self.ledger.record(batch.remote_output_path, location, code)
        return code is not None

    def stop_retrying(self) -> None:
        """Let storage failures fail at once from now on (a second stop signal)."""
        target = self.sink or self.storage
        if target is not None:
            target.stop_retrying()

    def _target(self) -> Sink:
        """Where shipped outputs go: the sink, else the storage (opened by then)."""
        target = self.sink or self.storage
        assert target is not None
        return target

    def ships(self, location: str) -> bool:
        """Whether the outputs at ``location`` are staged and shipped to storage."""
        return self.sink is not None or is_remote(location)

    def shipped_root(self, batch: Batch) -> str:
        """The batch's output root when its outputs are shipped, else an empty string."""
        root = batch.remote_output_path or ""
        return root if self.ships(root) else ""
