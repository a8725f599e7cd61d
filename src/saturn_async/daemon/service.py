"""The daemon: the machine's ``nprocs`` slots shared by every batch submitted to it.

One scheduler hands each free slot the next queued run, in submission order. Each run
goes through the supervisor's :class:`RunLifecycle`, as under ``saturn batch``; around
it the daemon journals the attempt's process group when it spawns and the run's final
status when it is recorded. See docs/operations.md.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from functools import partial
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread

from saturn_async import __version__
from saturn_async.daemon import protocol
from saturn_async.daemon.config import RELOADABLE, DaemonConfig, load_config
from saturn_async.daemon.disk import free_bytes, is_disk_full
from saturn_async.daemon.journal import (
    Accept,
    AnyRecord,
    Cancel,
    Finish,
    Journal,
    Launch,
    Lost,
    Start,
    lock_state_dir,
    read_journal,
)
from saturn_async.daemon.log import DaemonLog
from saturn_async.daemon.notify import sd_notify
from saturn_async.daemon.paths import DaemonPaths
from saturn_async.daemon.recovery import (
    RUN_ID_VARIABLE,
    boot_ticks,
    recorded_status,
    run_marker,
    stop_previous_attempt,
)
from saturn_async.daemon.server import bind_control_socket, serve
from saturn_async.daemon.spool import Spool, SpoolFile
from saturn_async.daemon.state import Attempt, BatchState, DaemonState
from saturn_async.exceptions import InputError, SaturnError
from saturn_async.spec import load_batch_file
from saturn_async.spec.models import Batch
from saturn_async.spec.paths import is_remote
from saturn_async.storage import Storage
from saturn_async.storage.layout import utcnow
from saturn_async.storage.local import LocalStorage
from saturn_async.supervisor.lifecycle import RunLifecycle
from saturn_async.supervisor.process import RunProcess, kill_after
from saturn_async.supervisor.supervisor import Supervisor

_COMPACT_AT_LEAST = 8 << 20
"""Compact when the journal has grown past this, and past twice its last compacted size."""
_SYNC_EVERY = 0.05
"""The journal's fsync after runs end comes at most this often (s), each covering every
run ended meanwhile: a power cut may forget the last 50 ms of ends, whose status files
are not fsynced either. Syncing after every end cost 7% of the daemon's throughput."""
_DISK_CHECK_SECONDS = 1.0
_MB = 1 << 20


class Daemon:
    def __init__(
        self,
        paths: DaemonPaths,
        config: DaemonConfig,
        *,
        config_path: str | None = None,
        overrides: dict[str, object] | None = None,
    ) -> None:
        self.paths = paths
        self.config = config
        self.config_path = config_path
        self.overrides = overrides or {}
        self.logbook = DaemonLog(config.log_format)
        self.state = DaemonState()
        self.draining = False
        self.paused: str | None = None
        self._changed = anyio.Event()
        self._resumed = anyio.Event()
        self._ranks: set[int] = set()
        self._procs: dict[tuple[str, int], RunProcess] = {}
        self._kill_timers: dict[tuple[str, int], anyio.CancelScope] = {}
        self._sync_wanted = anyio.Event()
        self._compact_at = _COMPACT_AT_LEAST
        self.supervisor = Supervisor(
            config.nprocs,
            grace=config.grace,
            report=lambda message: self.logbook("warning", "run_outputs", message),
            log_chunk_seconds=config.log_chunk_minutes * 60,
            staging_dir=config.staging_dir,
        )
        self.spool = Spool(config.spool) if config.spool else None
        self._journal: Journal | None = None
        self._runs: anyio.abc.TaskGroup

    @property
    def journal(self) -> Journal:
        assert self._journal is not None
        return self._journal

    # --- life ---------------------------------------------------------------

    async def serve(self) -> None:
        """Recover, listen, run what is submitted; return after a drain or a stop."""
        lock = lock_state_dir(self.paths.state_dir, self.paths.lock)
        try:
            for record in read_journal(self.paths.journal):
                self.state.apply(record)
            self._journal = Journal(self.paths.journal)
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

    async def _serve(self, sock: Any) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve, sock, self._handle, self._refused)
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

    def _notify(self) -> None:
        self._changed.set()

    # --- recovery -------------------------------------------------------------

    async def _recover(self) -> None:
        """Settle the attempts the journal shows in flight: finished, or lost."""
        in_flight = list(self.state.running())
        if not in_flight:
            return
        self.logbook("info", "recovering", f"{len(in_flight)} runs were in flight at the last stop")
        async with anyio.create_task_group() as tg:  # their graces run at the same time
            for batch, attempt in in_flight:
                tg.start_soon(self._stop_leftovers, batch, attempt)
        local = LocalStorage()
        for batch, attempt in in_flight:
            location = batch.batch.runs[attempt.index].remote_output_path
            assert location is not None
            storage: Storage = local
            if is_remote(location):
                await self.supervisor.open_roots([batch.batch])
                assert self.supervisor.storage is not None
                storage = self.supervisor.storage
            status = await recorded_status(storage, location, attempt.pid, attempt.attempt)
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
        earlier = batch.lost_events.get(index, [])
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
        )
        lifecycle.env[RUN_ID_VARIABLE] = run_marker(self.paths.state_dir, batch.run_id(index))
        try:
            if earlier and earlier[-1].attempt is not None:
                await lifecycle.outputs.rotate(earlier[-1].attempt)
            await lifecycle.attempt()
            outcome = await lifecycle.record()
            while not outcome.recorded and is_disk_full(outcome.error):
                self._pause(f"cannot record {lifecycle.run_dir}: {outcome.error}")
                await self._resumed.wait()
                outcome = await lifecycle.record()
            self._record(
                Finish(
                    batch=batch.id,
                    index=index,
                    status=outcome.status_code,
                    recorded=outcome.recorded,
                )
            )
            if batch.id not in self.state.batches:
                info = batch.info()
                self.logbook(
                    "info",
                    "batch_done",
                    f"batch {batch.id} done: {info.succeeded} succeeded, {info.failed} failed, "
                    f"{info.cancelled} cancelled",
                    batch=batch.id,
                    source=batch.source,
                )
        finally:
            self._procs.pop(key, None)
            timer = self._kill_timers.pop(key, None)
            if timer is not None:
                timer.cancel()
            self._ranks.discard(rank)
            self._notify()

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

    def _record(self, record: AnyRecord) -> None:
        self.journal.append(record)
        self.state.apply(record)
        if self.journal.error is not None:
            self._pause(f"cannot write the journal {self.journal.path}: {self.journal.error}")
        if isinstance(record, Finish):
            self._sync_wanted.set()

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

    # --- disk space -------------------------------------------------------------

    def _pause(self, reason: str) -> None:
        if self.paused is None:
            self.logbook("error", "disk_full", f"{reason}; starting no runs until there is room")
            self._resumed = anyio.Event()
            sd_notify(f"STATUS=paused: {reason}")
        self.paused = reason

    async def _watch_disk(self) -> None:
        while True:
            await anyio.sleep(_DISK_CHECK_SECONDS)
            reason = await anyio.to_thread.run_sync(self._disk_problem)
            if reason is None and self.journal.unwritten and not self.journal.write_unwritten():
                reason = f"cannot write the journal {self.journal.path}: {self.journal.error}"
            if reason is not None:
                self._pause(reason)
            elif self.paused is not None:
                self.logbook("info", "resumed", "there is room again; starting runs")
                self.paused = None
                self._resumed.set()
                sd_notify("STATUS=running")
                self._notify()

    def _state_dir_full(self) -> bool:
        return free_bytes(self.paths.state_dir) < self.config.min_free_mb * _MB

    def _disk_problem(self) -> str | None:
        need = self.config.min_free_mb * _MB
        directories = {self.paths.state_dir, self.supervisor.staging_dir}
        for batch in list(self.state.batches.values()):
            root = batch.batch.remote_output_path
            if root is not None and not is_remote(root):
                directories.add(root)
        for directory in sorted(directories):
            try:
                free = free_bytes(directory)
            except OSError:
                continue
            if free < need:
                return (
                    f"{directory} has {free / _MB:.1f} MB free, "
                    f"under min_free_mb {self.config.min_free_mb:g}"
                )
        return None

    # --- requests ---------------------------------------------------------------

    def _refused(self, uid: int) -> None:
        self.logbook("warning", "refused", f"refused a connection from uid {uid}", uid=uid)

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
        live = {b.source: b.id for b in self.state.batches.values()}
        for item in submitted:
            if item.source in live:
                raise InputError(
                    f"already queued as {live[item.source]} (cancel it first)", source=item.source
                )
        await self.supervisor.open_roots([item.batch for item in submitted])
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

    # --- drain, signals, reload ---------------------------------------------------

    def _drain(self, why: str) -> None:
        if not self.draining:
            self.draining = True
            self.logbook(
                "info",
                "draining",
                f"{why}: finishing {len(self._ranks)} running runs, starting no new ones",
                queued=self.state.queued,
            )
            sd_notify("STATUS=draining")
            self._notify()

    async def _signals(self) -> None:
        stops = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)  # QUIT: as TERM, never a core
        with anyio.open_signal_receiver(*stops, signal.SIGHUP) as signals:
            async with anyio.create_task_group() as tg:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        self._reload()
                    elif not self.draining:
                        self._drain(signal.Signals(signum).name)
                        tg.start_soon(self._stop_after_shutdown_grace, signum)
                    else:
                        self.supervisor.stop(signum)  # a second signal: stop the runs now
                        self._notify()

    async def _stop_after_shutdown_grace(self, signum: int) -> None:
        await anyio.sleep(self.config.shutdown_grace)
        if self._ranks and not self.supervisor.stopping:
            self.logbook(
                "warning",
                "stopping_runs",
                f"shutdown grace over: stopping {len(self._ranks)} running runs",
            )
            self.supervisor.stop(signum)
            self._notify()

    def _reload(self) -> None:
        try:
            new = load_config(self.config_path, self.overrides)
        except SaturnError as exc:
            self.logbook("error", "reload_failed", f"kept the old settings: {exc}")
            return
        old = self.config
        changed = {f: getattr(new, f) for f in RELOADABLE if getattr(new, f) != getattr(old, f)}
        fixed = [
            f for f in DaemonConfig.__struct_fields__
            if f not in RELOADABLE and getattr(new, f) != getattr(old, f)
        ]  # fmt: skip
        for name in fixed:
            setattr(new, name, getattr(old, name))
        self.config = new
        self.supervisor.grace = new.grace
        self.supervisor.log_chunk_seconds = new.log_chunk_minutes * 60
        self.logbook("info", "reloaded", "settings reloaded", **changed)
        if fixed:
            self.logbook(
                "warning", "restart_needed", f"changes to {', '.join(fixed)} need a restart"
            )
        self._notify()

    # --- spool ------------------------------------------------------------------

    async def _settle_claimed(self, spool: Spool) -> None:
        sources = {b.source for b in self.state.batches.values()}
        sources.update(info.source for info in self.state.done)
        for file in spool.claimed():
            if file.accepted in sources:
                spool.settle_accepted(file)
            else:
                await self._take_spooled(spool, file)

    async def _watch_spool(self, spool: Spool) -> None:
        while True:
            if not self.draining and self.paused is None:
                for file in await anyio.to_thread.run_sync(spool.claim_new):
                    await self._take_spooled(spool, file)
            await anyio.sleep(self.config.spool_interval)

    async def _take_spooled(self, spool: Spool, file: SpoolFile) -> None:
        try:
            batch = await anyio.to_thread.run_sync(load_batch_file, file.claimed)
            await self.supervisor.open_roots([batch])
        except SaturnError as exc:
            reason = str(exc).replace(file.claimed, os.path.basename(file.claimed))
            spool.settle_rejected(file, reason)
            self.logbook("error", "spool_rejected", f"rejected {file.rejected}: {reason}")
            return
        self._accept(file.accepted, batch)
        spool.settle_accepted(file)
