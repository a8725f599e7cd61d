"""The daemon's control requests: submit, ps, cancel and drain."""

from __future__ import annotations

import os
import signal
import time

import anyio
import anyio.to_thread

from saturn_async import __version__
from saturn_async.daemon import protocol
from saturn_async.daemon.admission import check_apart, check_submitted
from saturn_async.daemon.journal import Accept, Cancel
from saturn_async.daemon.shutdown import Shutdown
from saturn_async.daemon.start_limits import check_fit
from saturn_async.daemon.state import BatchState
from saturn_async.exceptions import InputError, SaturnError
from saturn_async.spec.models import Batch
from saturn_async.storage.layout import utcnow
from saturn_async.supervisor.process import RunProcess, kill_after


class Requests(Shutdown):
    async def _handle(self, request: protocol.Request) -> protocol.Reply:
        try:
            match request:
                case protocol.Submit():
                    return await self._submit(request.batches)
                case protocol.Ps():
                    return self.snapshot()
                case protocol.Cancel():
                    return self._cancel(request.target)
                case protocol.Drain():
                    self._drain("drain requested")
                    return protocol.Draining(running=len(self._ranks), queued=self.state.queued)
        except SaturnError as exc:
            return protocol.Error(message=str(exc))
        return protocol.Error(message=f"unknown request {type(request).__name__}")

    async def _submit(self, submitted: list[protocol.SubmittedBatch]) -> protocol.Reply:
        if self.draining:
            raise InputError("the daemon is draining and takes no new batches")
        if self.journal.unwritten or self._state_dir_full():
            raise InputError(
                "the state directory is full; no batch is accepted until there is room",
                source=self.paths.state_dir,
            )
        batches = list(self.state.batches.values())
        live = {b.source: b.id for b in batches}
        for item in submitted:
            if item.source in live:
                raise InputError(
                    f"already queued as {live[item.source]} (cancel it first)", source=item.source
                )
        # What the socket brought is checked as saturn batch checks a file (the client
        # did, but any client may connect): a batch that could not run is never journaled.
        # Nor one whose outputs meet those of a live batch (queued or running).
        await anyio.to_thread.run_sync(check_submitted, submitted, [b.batch for b in batches])
        await anyio.to_thread.run_sync(check_fit, self.gate, submitted)
        await self.supervisor.open_roots([item.batch for item in submitted])
        # A batch accepted while this one was checked (usually none) is checked here.
        seen = set(live.values())
        check_apart(submitted, [b.batch for b in self.state.batches.values() if b.id not in seen])
        ids = [self._accept(item.source, item.batch) for item in submitted]
        return protocol.Accepted(ids=ids, runs=sum(len(i.batch.runs) for i in submitted))

    def _accept(self, source: str, batch: Batch) -> str:
        batch_id = self.state.new_batch_id()
        self._record(Accept(id=batch_id, source=source, submitted=utcnow(), batch=batch))
        self.logbook(
            "info",
            "accepted",
            f"accepted {source} as {batch_id}: {len(batch.runs)} runs",
            batch=batch_id,
            runs=len(batch.runs),
        )
        self._notify()
        return batch_id

    def snapshot(self) -> protocol.Snapshot:
        now = time.monotonic()
        running = [
            protocol.RunInfo(
                id=batch.run_id(a.index),
                rank=a.rank,
                pid=a.pid,
                attempt=a.attempt,
                seconds=round(now - a.since, 3),
                output=batch.batch.runs[a.index].remote_output_path or "",
                cmd=batch.batch.runs[a.index].cmd,
            )
            for batch, a in self.state.running()
        ]
        state = "running"
        if self.supervisor.stopping:
            state = "stopping"
        elif self.draining:
            state = "draining"
        elif self.paused is not None:
            state = "paused"
        return protocol.Snapshot(
            pid=os.getpid(),
            version=__version__,
            state=state,
            paused_reason=self.paused,
            nprocs=self.config.nprocs,
            queued=self.state.queued,
            succeeded=self.state.succeeded,
            failed=self.state.failed,
            batches=[*self.state.done, *(b.info() for b in self.state.batches.values())],
            running=sorted(running, key=lambda r: r.rank),
        )

    def _cancel(self, target: str) -> protocol.Cancelled:
        matches = self._resolve_target(target)
        queued = running = 0
        for batch, index in matches:
            if index is None:
                before = batch.cancelled
                self._record(Cancel(batch=batch.id))
                queued += batch.cancelled - before
                indexes = list(batch.running)
            elif index in batch.running:
                indexes = [index]
            else:
                before = batch.cancelled
                self._record(Cancel(batch=batch.id, index=index))
                queued += batch.cancelled - before
                indexes = []
            for i in indexes:
                proc = self._procs.get((batch.id, i))
                if proc is not None and proc.exit is None:
                    self._stop_run((batch.id, i), proc)
                    running += 1
        self.logbook("info", "cancelled", f"cancelled {target}: {queued} queued, {running} running")
        self._notify()
        return protocol.Cancelled(queued=queued, running=running)

    def _resolve_target(self, target: str) -> list[tuple[BatchState, int | None]]:
        batches = self.state.batches
        head, _, tail = target.partition(".")
        if head in batches and not tail:
            return [(batches[head], None)]
        if head in batches and tail.isdigit() and int(tail) < batches[head].total:
            return [(batches[head], int(tail))]
        path = target if "://" in target else os.path.abspath(target)
        found: list[tuple[BatchState, int | None]] = [
            (b, None) for b in batches.values() if b.source == path
        ]
        if found:
            return found
        for batch in batches.values():
            for index, run in enumerate(batch.batch.runs):
                if run.remote_output_path == path:
                    return [(batch, index)]
        raise InputError("no queued or running batch or run matches", source=target)

    def _stop_run(self, key: tuple[str, int], proc: RunProcess) -> None:
        """TERM the run's group; KILL it if it is still running after the grace."""
        proc.stop(signal.SIGTERM)
        scope = anyio.CancelScope()
        self._kill_timers[key] = scope

        async def kill_after_grace() -> None:
            with scope:
                await kill_after(proc.signal_group, proc.ended, self.config.grace)

        self._runs.start_soon(kill_after_grace)
