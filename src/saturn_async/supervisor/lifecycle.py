"""One run from start to final status: attempts, timeout, retries, events, outputs."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import anyio

from saturn_async.exceptions import StorageError
from saturn_async.spec.models import Batch, Run
from saturn_async.storage.layout import Event, utcnow
from saturn_async.supervisor.cgroups import TreeUsage
from saturn_async.supervisor.halt import Halt
from saturn_async.supervisor.lease import Holder, MetOwners
from saturn_async.supervisor.memory_caps import OOM_STATUS, MemoryCaps, RunCap, oom_event
from saturn_async.supervisor.process import Exit, RunProcess, stop_leftovers, term_then_kill
from saturn_async.supervisor.retrying import RetryRule
from saturn_async.supervisor.run_storage import RunStorage
from saturn_async.supervisor.usage import measured

# The status recorded when a run could not be started at all (as a shell reports it).
CANNOT_START = 127
REQUEUE_LAG = 1.0
"""Seconds a run that failed before its supervisor stopped waits for that stop, when TERM
means a requeue (``--requeue-on-term``): the job system signals every process of the job
at once, and the run's end may be seen before the supervisor's own TERM."""


@dataclass(frozen=True, slots=True)
class Outcome:
    status_code: int
    recorded: bool
    """False when the final status could not be written (the run counts as failed)."""
    error: OSError | StorageError | None = None
    """Why the final status could not be written."""
    requeued: bool = False
    """The run was stopped for a requeue: nothing recorded, its lease given back."""


class RunHost(Protocol):
    """What a run needs of the supervisor that runs it (:class:`Supervisor`)."""

    grace: float
    skip_finished: bool
    submitted: str
    met_owners: MetOwners
    run_storage: RunStorage
    memory_caps: MemoryCaps
    stop_requested: anyio.Event
    forced: anyio.Event
    requeue_signal: int | None
    """The stop signal that means the batch will run again (``--requeue-on-term``)."""
    stop_signal: int | None
    retries_cut: anyio.Event
    """Set when no retry may start any more (a stop, a drain): ends the waits before one."""

    @property
    def stopping(self) -> bool: ...

    def report(self, message: str) -> None: ...

    def environment_for(self, batch: Batch) -> dict[str, str]: ...

    def attempt_ended(self, lifecycle: RunLifecycle) -> None: ...

    def track(self, proc: RunProcess) -> None: ...

    def untrack(self, proc: RunProcess) -> None: ...


class RunLifecycle:
    """Executes one run in one slot, retrying as configured, and records its outputs."""

    def __init__(
        self,
        supervisor: RunHost,
        batch: Batch,
        run: Run,
        rank: int,
        *,
        submitted: str | None = None,
        first_attempt: int = 1,
        earlier_events: Sequence[Event] = (),
        on_launch: Callable[[int], None] | None = None,
        on_start: Callable[[int, RunProcess], None] | None = None,
        halt: Halt | None = None,
    ) -> None:
        """``first_attempt`` and ``earlier_events`` continue a run whose earlier attempts
        were lost (the daemon's recovery). ``on_launch(attempt)`` is called right before
        each spawn and ``on_start(attempt, proc)`` right after it, with nothing else
        running in between (the daemon journals both). ``halt``: the halt policy the run
        is under; a ``now`` halt stops it (``halted`` event)."""
        assert run.remote_output_path is not None, "runs are resolved before they execute"
        self.sup = supervisor
        self.run = run
        self.rank = rank
        self.run_dir = run.remote_output_path
        self.outputs = supervisor.run_storage.outputs_for(batch, run)
        self.working_dir = batch.working_dir
        self.lease = supervisor.run_storage.lease_for(self.run_dir, self.outputs, supervisor.grace)
        self._lease_error: str | None = None
        self.timeout = run.timeout if run.timeout is not None else batch.timeout
        retries = run.retries if run.retries is not None else batch.retries
        self.first_attempt = first_attempt
        self.last_attempt = first_attempt + (retries or 0)
        self.on_launch = on_launch
        self.on_start = on_start
        self.halt = halt
        self.halted_by: str | None = None
        """The run whose failure set off the halt that stopped this one."""
        self._waiting: anyio.CancelScope | None = None
        self.batch = batch
        self.status = CANNOT_START
        self.requeued = False
        """Its attempt was stopped for a requeue: it records nothing."""
        self._rule: RetryRule | None = None
        self.memory_limit = supervisor.memory_caps.limit_for(batch, run)
        self.env = supervisor.environment_for(batch)
        if run.env:
            self.env.update(run.env)
        self.env.update(
            SATURN_RUN_LOCAL_RESULTS_DIR=self.outputs.results_dir,
            SATURN_RUN_LOCAL_RANK=str(rank),
            SATURN_RUN_REMOTE_OUTPUT_PATH=self.run_dir,
        )
        submitted = submitted or supervisor.submitted
        self.events = [Event(type="submitted", utctimestamp=submitted, cmd=run.cmd)]
        self.events.extend(earlier_events)

    async def take_lease(self, wait: bool) -> Holder | None:
        """Take the run's lease, before its first attempt: None once held, else the live
        owner met (with ``wait``: met when the supervisor stopped waiting), and then
        nothing of the run is touched. A failure to take it fails the run: no attempt
        starts, a ``failed`` event says why."""
        try:
            return await self.lease.acquire(
                wait,
                self.sup.stop_requested,
                partial(self.sup.met_owners.waiting, report=self.sup.report),
            )
        except (OSError, StorageError) as exc:
            self._lease_error = f"could not take the lease: {exc}"
            return None

    async def let_go(self) -> None:
        """Give the lease back unused: the run does not start (a halt came meanwhile)."""
        await self.lease.give_back()
        self.outputs.close()

    async def execute(self) -> Outcome:
        """Run to a final status and record it, then release the lease."""
        try:
            async with self.lease.kept(self.sup.report):
                await self.attempt()
            if self.requeued:
                await self.let_go()
                return Outcome(self.status, recorded=False, requeued=True)
            outcome = await self.record()
        except BaseException:
            self.lease.abandon()
            raise
        await self.lease.release()
        return outcome

    async def attempt(self) -> None:
        """Run the attempts: the first, then retries while they fail."""
        try:
            await self._attempts()
        except BaseException:
            self.outputs.close()  # abandoned (cancelled): record() is not coming
            raise
        finally:
            if self.halt is not None:
                self.halt.running.discard(self)

    def stop_for_halt(self, trigger: str) -> None:
        """Stop this run for the halt ``trigger``'s failure set off: its attempt, or its
        wait before a retry (no further attempt starts)."""
        self.halted_by = trigger
        if self._waiting is not None:
            self._waiting.cancel()

    async def _attempts(self) -> None:
        if self._lease_error is not None:
            self.events.append(
                Event(
                    type="failed",
                    utctimestamp=utcnow(),
                    attempt=self.first_attempt,
                    error=self._lease_error,
                )
            )
            self.sup.attempt_ended(self)  # an attempt that could not start has its end too
            return
        if self.sup.skip_finished:  # a rerun: a dead attempt's chunks must not stay
            try:
                await self.outputs.drop_lost_chunks(self.last_attempt)
            except StorageError as exc:
                self.sup.report(f"could not remove a lost attempt's log chunks: {exc}")
        if self.halt is not None:  # from here to the first spawn nothing awaits
            self.halt.running.add(self)
        for attempt in range(self.first_attempt, self.last_attempt + 1):
            if self.halted_by is not None:  # halted while it waited for this attempt
                self.events.append(self._halted_event())
                break
            if self.on_launch is not None:
                self.on_launch(attempt)
            started = await self._start(attempt)
            if started is None:
                self.sup.attempt_ended(self)
                break
            proc, cap = started
            if self.on_start is not None:
                self.on_start(attempt, proc)
            async with self.outputs.shipping():
                exit, end, tree = await self._supervise(proc, cap)
            if end in ("terminated", "failed") and await self._stopped_for_requeue(exit):
                self.requeued = True
                break
            if cap is not None and tree is not None and (oom := oom_event(cap, tree, attempt)):
                self.events.append(oom)
                exit, end = dataclasses.replace(exit, status=OOM_STATUS), "failed"
            self.status = exit.status
            self.events.append(self._end_event(end, exit, attempt, tree))
            self.sup.attempt_ended(self)
            if not await self._retries(end, exit, attempt):
                break
            await self.outputs.rotate(attempt)

    async def _retries(self, end: str, exit: Exit, attempt: int) -> bool:
        """After an attempt that ended ``end``: whether another follows, after its delay
        (its ``retry`` event added). A stop for a requeue leaves the retry to the batch
        run again: the run records nothing."""
        if end != "failed" or attempt == self.last_attempt:
            return False
        if self.sup.stopping and not self.requeueing:
            return False
        self._rule = self._rule or RetryRule(self.batch, self.run)
        if not self._rule.retries(exit.status):
            return False
        if self.requeueing:
            self.requeued = True
            return False
        delay = self._rule.next_delay()
        if delay and not await self._wait_to_retry(delay):
            if self.halted_by is not None:
                self.events.append(self._halted_event())
            elif self.requeueing:
                self.requeued = True
            return False
        self.events.append(
            Event(
                type="retry",
                utctimestamp=utcnow(),
                attempt=attempt + 1,
                delay_seconds=delay or None,
            )
        )
        return True

    @property
    def requeueing(self) -> bool:
        """Whether the supervisor is stopping for a requeue (``--requeue-on-term``)."""
        sup = self.sup
        return sup.requeue_signal is not None and sup.stop_signal == sup.requeue_signal

    async def _stopped_for_requeue(self, exit: Exit) -> bool:
        """Whether the attempt that failed with ``exit`` ends for a requeue: the
        supervisor stops for one, or its stop comes within REQUEUE_LAG (the job system
        signals every process of the job at once, and this run's end may come first,
        whatever code it exits with)."""
        if self.sup.requeue_signal is None or exit.status == 0:
            return False
        if self.sup.stop_signal is None:
            with anyio.move_on_after(REQUEUE_LAG):
                await self.sup.stop_requested.wait()
        return self.requeueing

    async def _wait_to_retry(self, delay: float) -> bool:
        """Wait ``delay`` seconds before a retry; False (no retry) when a stop, a drain or
        a halt ends the wait first."""
        with anyio.CancelScope(deadline=anyio.current_time() + delay) as self._waiting:
            if self.halted_by is None:
                await self.sup.retries_cut.wait()
        self._waiting = None
        return not self.sup.retries_cut.is_set() and self.halted_by is None

    def _halted_event(self) -> Event:
        return Event(type="halted", utctimestamp=utcnow(), halted_by=self.halted_by)

    async def record(self) -> Outcome:
        """Record the final status; may be called again when recording failed."""
        try:
            self.status = await self.outputs.finish(self.events, self.status)
        except (OSError, StorageError) as exc:
            self.sup.report(f"could not record the outcome of {self.run_dir}: {exc}")
            return Outcome(self.status, recorded=False, error=exc)
        return Outcome(self.status, recorded=True)

    async def _start(self, attempt: int) -> tuple[RunProcess, RunCap | None] | None:
        """Spawn one attempt; a failure to start it (its directory, its log files, its
        memory cap, the spawn: no fds, no processes, an environment over ARG_MAX) ends
        this run only, with CANNOT_START and a ``failed`` event saying why."""
        # Inline on the event loop, not in a thread: see docs/architecture.md, "Spawning".
        cap = None
        try:
            if self.memory_limit is not None:
                cap = self.sup.memory_caps.start(self.memory_limit)
            stdout, stderr = self.outputs.prepare()
            try:
                proc = RunProcess(
                    self.run.cmd,
                    self.env,
                    stdout,
                    stderr,
                    self.working_dir,
                    self.lease.fd,
                    cap.prelude if cap is not None else None,
                )
            finally:
                os.close(stdout)
                if stderr != stdout:
                    os.close(stderr)
        except (OSError, ValueError) as exc:
            if cap is not None and cap.cgroup is not None:
                await cap.cgroup.finish(self.sup.report)
            self.status = CANNOT_START
            self.events.append(
                Event(type="failed", utctimestamp=utcnow(), attempt=attempt, error=str(exc))
            )
            return None
        self.events.append(
            Event(
                type="started", utctimestamp=utcnow(), attempt=attempt, rank=self.rank, pid=proc.pid
            )
        )
        return proc, cap

    async def _supervise(
        self, proc: RunProcess, cap: RunCap | None
    ) -> tuple[Exit, str, TreeUsage | None]:
        """Wait for the run, enforcing the timeout; returns (exit, end event type, what
        its cgroup counted), its cgroup removed."""
        self.sup.track(proc)
        stopped_for = None
        tree = None
        try:
            if self.timeout or self.halt is not None:
                deadline = anyio.current_time() + self.timeout if self.timeout else math.inf
                with anyio.CancelScope(deadline=deadline) as self._waiting:
                    if self.halted_by is None:  # a halt that came during the spawn stops it
                        await proc.wait()
                self._waiting = None
                if proc.exit is None:
                    stopped_for = "timeout" if self.halted_by is None else "halted"
                    await term_then_kill(proc.signal_group, proc.reaped, self.sup.grace)
            exit = await proc.wait()
            await stop_leftovers(proc.pgid, self.sup.grace, self.sup.forced)
        finally:
            self.sup.untrack(proc)
            await proc.kill_and_reap()
            if cap is not None and cap.cgroup is not None:
                tree = await cap.cgroup.finish(self.sup.report)
        if stopped_for == "halted" and exit.status != 0:
            return exit, "halted", tree
        if proc.terminated and exit.status != 0:
            return exit, "terminated", tree
        if stopped_for == "timeout":
            return exit, "timeout", tree
        return exit, "complete" if exit.status == 0 else "failed", tree

    def _end_event(self, end: str, exit: Exit, attempt: int, tree: TreeUsage | None) -> Event:
        usage = measured(exit.rusage, tree)
        return Event(
            type=end,
            utctimestamp=utcnow(),
            attempt=attempt,
            exit_code=exit.status,
            signal=exit.signal,
            wall_seconds=round(exit.wall_seconds, 6),
            cpu_user_seconds=round(usage.cpu_user_seconds, 6),
            cpu_system_seconds=round(usage.cpu_system_seconds, 6),
            max_rss_kib=usage.max_rss_kib,
            max_rss_at_most_kib=usage.max_rss_at_most_kib,
            halted_by=self.halted_by if end == "halted" else None,
        )
