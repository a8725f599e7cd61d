"""The daemon: the machine's ``nprocs`` slots shared by every batch submitted to it.

One scheduler hands each free slot the next queued run, in submission order. Each run
goes through the supervisor's :class:`RunLifecycle`, as under ``saturn batch``; around
it the daemon journals the attempt's process group when it spawns and the run's final
status when it is recorded. See docs/operations.md.
"""

from __future__ import annotations

import contextlib
import os
import socket
from functools import partial

import anyio

from saturn_async.daemon.admission import admit
from saturn_async.daemon.config import DaemonConfig
from saturn_async.daemon.disk import is_disk_full
from saturn_async.daemon.halting import Halting
from saturn_async.daemon.journal import (
    Accept,
    AnyRecord,
    Finish,
    Journal,
    Launch,
    Lost,
    Quarantine,
    Start,
    lock_state_dir,
    read_journal,
)
from saturn_async.daemon.log import describe
from saturn_async.daemon.notify import sd_notify
from saturn_async.daemon.recovery import (
    RUN_ID_VARIABLE,
    boot_ticks,
    recorded_status,
    run_marker,
    stop_previous_attempt,
)
from saturn_async.daemon.server import ControlServer, bind_control_socket
from saturn_async.daemon.state import Attempt, BatchState
from saturn_async.exceptions import InputError
from saturn_async.spec.paths import is_remote
from saturn_async.storage import Storage
from saturn_async.storage.layout import utcnow
from saturn_async.storage.local import LocalStorage
from saturn_async.supervisor.lifecycle import RunLifecycle
from saturn_async.supervisor.process import RunProcess
from saturn_async.supervisor.start_gate import Ticket

_COMPACT_AT_LEAST = 8 << 20
"""Compact when the journal has grown past this, and past twice its last compacted size."""
_SYNC_EVERY = 0.05
"""The journal's fsync after runs end comes at most this often (s), each covering every
run ended meanwhile: a power cut may forget the last 50 ms of ends, whose status files
are not fsynced either. Syncing after every end cost 7% of the daemon's throughput."""


class Daemon(Halting):
    """The whole daemon (see ``daemon.core`` for its layers): life, recovery, scheduling."""

    _compact_at = _COMPACT_AT_LEAST
    _local = LocalStorage()

    # --- life ---------------------------------------------------------------

    async def serve(self) -> None:
        """Recover, listen, run what is submitted; return after a drain or a stop."""
        lock = lock_state_dir(self.paths.state_dir, self.paths.lock)
        try:
            failed = self._replay(read_journal(self.paths.journal))
            self._journal = Journal(self.paths.journal)
            for batch_id, reason in failed.items():
                if batch_id in self.state.batches:  # not retired by a later record
                    self._quarantine(self.state.batches[batch_id], reason)
            async with self.supervisor.serving():
                await self._recover()
                await self.journal.compact(self.state.snapshot())
                if self.spool is not None:
                    await self._settle_claimed(self.spool)
                sock = bind_control_socket(self.paths.socket)
                try:
                    await self._serve(sock)
                finally:
                    with contextlib.suppress(OSError):
                        os.unlink(self.paths.socket)
            await self.journal.sync()
            self.journal.close()
        finally:
            os.close(lock)

    def _settings(self) -> DaemonConfig:
        return self.config

    async def _serve(self, sock: socket.socket) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ControlServer(sock, self._handle, self.logbook, self._settings).serve)
            tg.start_soon(self._signals)
            tg.start_soon(self._watch_disk)
            tg.start_soon(self._sync_journal)
            if self.spool is not None:
                tg.start_soon(self._watch_spool, self.spool)
            self.logbook(
                "info",
                "ready",
                f"daemon ready: {self.config.nprocs} slots, socket {self.paths.socket}",
                pid=os.getpid(),
                nprocs=self.config.nprocs,
                queued=self.state.queued,
                state_dir=self.paths.state_dir,
            )
            sd_notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=running")
            await self._schedule()
            sd_notify("STOPPING=1")
            tg.cancel_scope.cancel()
        self.logbook("info", "stopped", "daemon stopped", queued=self.state.queued)

    # --- recovery -------------------------------------------------------------

    def _replay(self, records: list[AnyRecord]) -> dict[str, str]:
        """Rebuild the state; return the live batches that cannot run, with the reason:
        those a record of could not be applied, and those ``saturn batch`` would refuse
        (a journal of an older version may hold them)."""
        failed: dict[str, str] = {}
        for number, record in enumerate(records, 1):
            try:
                self.state.apply(record)
            except Exception as exc:  # a record of another version, or a damaged one
                batch_id = record.id if isinstance(record, Accept) else getattr(record, "batch", "")
                what = f"journal record {number} ({type(record).__name__.lower()})"
                if batch_id in self.state.batches:
                    failed.setdefault(batch_id, f"{what} could not be replayed: {describe(exc)}")
                else:
                    self.logbook("error", "journal_skipped", f"skipped {what}: {describe(exc)}")
        for batch in self.state.batches.values():
            if batch.id in failed or batch.quarantined is not None:
                continue
            try:
                admit(batch.batch, batch.source)
            except InputError as exc:
                failed[batch.id] = f"refused on replay: {exc}"
        return failed

    def _quarantine(self, batch: BatchState, reason: str, index: int | None = None) -> None:
        """Start none of ``batch``'s runs any more, for good (the record is journaled);
        a batch already quarantined keeps its first reason."""
        if batch.quarantined is not None:
            self._record(Quarantine(batch=batch.id, reason=batch.quarantined, index=index))
            self.logbook("error", "run_failed", reason, batch=batch.id)
            return
        self._record(Quarantine(batch=batch.id, reason=reason, index=index))
        self.logbook(
            "error",
            "quarantined",
            f"quarantined {batch.id}: {reason}; none of its runs start (saturn cancel "
            f"{batch.id} drops them)",
            batch=batch.id,
            source=batch.source,
        )
        self._notify()

    async def _recover(self) -> None:
        """Settle the attempts the journal shows in flight: finished, or lost."""
        in_flight = list(self.state.running())
        if not in_flight:
            return
        self.logbook("info", "recovering", f"{len(in_flight)} runs were in flight at the last stop")
        async with anyio.create_task_group() as tg:  # their graces run at the same time
            for batch, attempt in in_flight:
                tg.start_soon(self._stop_leftovers, batch, attempt)
        for batch, attempt in in_flight:
            try:
                status = await self._recorded_status(batch, attempt)
            except Exception as exc:  # a batch this version cannot read back
                status = None
                if batch.quarantined is None:
                    reason = f"recovering {batch.run_id(attempt.index)} failed: {describe(exc)}"
                    self._quarantine(batch, reason)
            if status is not None:
                self._record(Finish(batch=batch.id, index=attempt.index, status=status))
                continue
            self._record(
                Lost(
                    batch=batch.id,
                    index=attempt.index,
                    attempt=attempt.attempt,
                    pid=attempt.pid,
                    at=utcnow(),
                )
            )
            self.logbook(
                "warning",
                "lost",
                f"{batch.run_id(attempt.index)} attempt {attempt.attempt} was lost; it runs again",
            )

    async def _recorded_status(self, batch: BatchState, attempt: Attempt) -> int | None:
        location = batch.batch.runs[attempt.index].remote_output_path
        assert location is not None
        storage: Storage = self._local
        if is_remote(location):
            await self.supervisor.open_roots([batch.batch])
            assert self.supervisor.run_storage.storage is not None
            storage = self.supervisor.run_storage.storage
        return await recorded_status(storage, location, attempt.pid, attempt.attempt)

    async def _stop_leftovers(self, batch: BatchState, attempt: Attempt) -> None:
        run_id = batch.run_id(attempt.index)
        found = await stop_previous_attempt(
            attempt.pid,
            (attempt.ticks, attempt.ticks_until),
            run_marker(self.paths.state_dir, run_id),
            self.config.grace,
        )
        if found:
            self.logbook(
                "warning",
                "stopped_leftover",
                f"stopped {found} processes left running by {run_id}",
                pgid=attempt.pid,
            )

    # --- scheduling -------------------------------------------------------------

    async def _schedule(self) -> None:
        async with anyio.create_task_group() as runs:
            self._runs = runs
            while True:
                changed = self._changed = anyio.Event()
                if self.draining and not self._ranks:
                    return
                while self._may_start():
                    item = self.state.next_run()
                    if item is None:
                        break
                    rank = min(set(range(self.config.nprocs)) - self._ranks)
                    self._ranks.add(rank)
                    runs.start_soon(self._run, rank, *item)
                await changed.wait()

    def _may_start(self) -> bool:
        return (
            not self.draining
            and self.paused is None
            and not self.supervisor.stopping
            and len(self._ranks) < self.config.nprocs
        )

    async def _run(self, rank: int, batch: BatchState, index: int) -> None:
        key = (batch.id, index)
        ticket = None
        try:
            if self.gate is not None:  # memory, load, GPUs; a stop leaves the run queued
                ticket = await self.gate.enter(batch.batch, batch.batch.runs[index], self._closed)
                if ticket is None:
                    return
            await self._execute(rank, batch, index, ticket)
        except Exception as exc:  # not the run's failure (that is its status): the start's
            proc = self._procs.get(key)
            if proc is not None:
                await proc.kill_and_reap()
            reason = f"starting {batch.run_id(index)} failed: {describe(exc)}"
            if batch.id in self.state.batches:
                self._quarantine(batch, reason, index)
            else:
                self.logbook("error", "run_failed", reason, batch=batch.id)
        finally:
            if ticket is not None and self.gate is not None:
                self.gate.leave(ticket)
            self._procs.pop(key, None)
            timer = self._kill_timers.pop(key, None)
            if timer is not None:
                timer.cancel()
            self._ranks.discard(rank)
            self._notify()

    def _closed(self) -> bool:
        return self.draining or self.supervisor.stopping

    async def _execute(
        self, rank: int, batch: BatchState, index: int, ticket: Ticket | None
    ) -> None:
        earlier = batch.lost_events.get(index, [])
        halt = self._halt_of(batch)
        lifecycle = RunLifecycle(
            self.supervisor,
            batch.batch,
            batch.batch.runs[index],
            rank,
            submitted=batch.submitted,
            first_attempt=batch.attempts.get(index, 0) + 1,
            earlier_events=earlier,
            on_launch=partial(self._launching, batch, index, rank),
            on_start=partial(self._started, batch, index, rank),
            halt=halt,
        )
        lifecycle.env[RUN_ID_VARIABLE] = run_marker(self.paths.state_dir, batch.run_id(index))
        if ticket is not None:
            lifecycle.env.update(ticket.gpu_env)
        # A run another supervisor holds is waited for (the daemon is a queue); when
        # the daemon stops meanwhile, the run stays queued for its next start.
        if await lifecycle.take_lease(wait=True) is not None:
            lifecycle.outputs.close()
            return
        if halt is not None and halt.halted:  # meanwhile: the halt cancelled this run
            await lifecycle.let_go()
            return
        try:
            if earlier and earlier[-1].attempt is not None:
                await lifecycle.outputs.rotate(earlier[-1].attempt)
            async with lifecycle.lease.kept(self.supervisor.report):
                await lifecycle.attempt()
            outcome = await lifecycle.record()
            while not outcome.recorded and is_disk_full(outcome.error):
                self._pause(f"cannot record {lifecycle.run_dir}: {outcome.error}")
                await self._resumed.wait()
                outcome = await lifecycle.record()
        except BaseException:
            lifecycle.lease.abandon()
            raise
        await lifecycle.lease.release()
        self._record(
            Finish(
                batch=batch.id,
                index=index,
                status=outcome.status_code,
                recorded=outcome.recorded,
            )
        )
        if halt is not None and halt.run_ended(
            lifecycle.run_dir, outcome.status_code, lifecycle.halted_by is not None
        ):
            self._halted(batch, halt)
        if batch.id not in self.state.batches:
            self._halts.pop(batch.id, None)
            info = batch.info()
            self.logbook(
                "info",
                "batch_done",
                f"batch {batch.id} done: {info.succeeded} succeeded, {info.failed} failed, "
                f"{info.cancelled} cancelled",
                batch=batch.id,
                source=batch.source,
            )

    def _launching(self, batch: BatchState, index: int, rank: int, attempt: int) -> None:
        self._record(
            Launch(batch=batch.id, index=index, attempt=attempt, rank=rank, ticks=boot_ticks())
        )

    def _started(
        self, batch: BatchState, index: int, rank: int, attempt: int, proc: RunProcess
    ) -> None:
        self._procs[(batch.id, index)] = proc
        self._record(
            Start(
                batch=batch.id,
                index=index,
                attempt=attempt,
                rank=rank,
                pid=proc.pid,
                ticks=batch.running[index].ticks,
                ticks_until=boot_ticks(),
                started=utcnow(),
            )
        )

    async def _sync_journal(self) -> None:
        """fsync after runs end, at most every ``_SYNC_EVERY`` s (each covering all runs
        ended meanwhile); compact."""
        while True:
            await self._sync_wanted.wait()
            self._sync_wanted = anyio.Event()
            await self.journal.sync()
            await anyio.sleep(_SYNC_EVERY)
            if self.journal.size > self._compact_at and not self.journal.unwritten:
                await self.journal.compact(self.state.snapshot())
                self._compact_at = max(_COMPACT_AT_LEAST, 2 * self.journal.size)
