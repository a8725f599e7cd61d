"""``FuturesExecutor`` (any ``concurrent.futures.Executor``) and ``MultiprocessingExecutor``.

One batch per future. ``MultiprocessingExecutor`` is the futures executor over a
``ProcessPoolExecutor`` of ``processes`` workers started by forkserver. Starting the pool
and waiting for it block, so they run in a worker thread.
"""

from __future__ import annotations

import concurrent.futures
import functools
import multiprocessing
import os
import select
import signal
import threading
from collections.abc import Iterable
from typing import Annotated, Any, ClassVar

import anyio.to_thread
import msgspec

from saturn_async.exceptions import InputError
from saturn_async.executors.abc import Outstanding
from saturn_async.executors.jobs import WorkerJob
from saturn_async.executors.local import OnClientMachine
from saturn_async.executors.worker import run_batches
from saturn_async.plugins import load_object
from saturn_async.spec.models import Batch
from saturn_async.supervisor.process import start_ticks


class FuturesConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    class_spec: str
    factory: str = "concurrent.futures:ProcessPoolExecutor"
    """``module:attr`` of a callable returning a concurrent.futures.Executor."""
    kwargs: dict[str, Any] = msgspec.field(default_factory=dict)


class MultiprocessingConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    class_spec: str
    processes: Annotated[int, msgspec.Meta(ge=1)] = msgspec.field(
        default_factory=lambda: os.cpu_count() or 1
    )


def start_worker(client_pid: int, client_ticks: int | None) -> None:
    """The initializer of pool workers: each dies of SIGKILL when the client does, and
    its supervisors' watchdogs then stop their runs.

    The worker watches the client through a pidfd, whatever started it: a forkserver
    worker's parent is the forkserver, which lives as long as any worker holds its
    "alive" pipe, so neither its exit nor PR_SET_PDEATHSIG would ever come. A worker
    started after the client died exits at once."""
    ignore_interrupts()
    try:
        pidfd = os.pidfd_open(client_pid)
    except ProcessLookupError:
        os._exit(1)
    if start_ticks(client_pid) != client_ticks:  # the pid is another process's now
        os._exit(1)
    threading.Thread(target=_die_with, args=(pidfd,), name="saturn-client", daemon=True).start()


def _die_with(pidfd: int) -> None:
    select.select([pidfd], [], [])
    os.kill(os.getpid(), signal.SIGKILL)


def pool_initializer() -> dict[str, Any]:
    """``initializer`` and ``initargs`` of a process pool started by this client."""
    return {"initializer": start_worker, "initargs": (os.getpid(), start_ticks(os.getpid()))}


def ignore_interrupts() -> None:
    """Pool workers leave what a terminal sends its whole foreground group (Ctrl-C,
    Ctrl-\\, a hangup) to ``saturn run``, which stops them through the sweep; dying of
    it would leave their runs behind. A handler that does nothing, not SIG_IGN: an
    ignored signal stays ignored across exec, in the runs too."""
    for signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(signum, _ignore)


def _ignore(signum: int, frame: object) -> None:
    return None


class FuturesExecutor(OnClientMachine):
    Config: ClassVar[type[msgspec.Struct]] = FuturesConfig

    def __init__(self, config: Any, record: Any) -> None:
        super().__init__(config, record)
        self._pool: concurrent.futures.Executor | None = None
        self._futures: list[concurrent.futures.Future[Any]] = []

    def make_pool(self) -> concurrent.futures.Executor:
        field = "$.executor.factory"
        factory: Any = load_object(self.config.factory, source=self.record.source, field=field)
        kwargs = dict(self.config.kwargs)
        if factory is concurrent.futures.ProcessPoolExecutor and "initializer" not in kwargs:
            kwargs.update(pool_initializer())
        pool = factory(**kwargs)
        if not isinstance(pool, concurrent.futures.Executor):
            raise InputError(
                f"{self.config.factory!r} did not return a concurrent.futures.Executor",
                source=self.record.source,
                field=field,
            )
        return pool

    async def slot_groups(self, nprocs: int) -> int:
        return int(self.config.kwargs.get("max_workers") or os.cpu_count() or 1)

    async def run(self, job: WorkerJob, batches: Iterable[Batch]) -> None:
        await anyio.to_thread.run_sync(self._start, job, batches)

    def _start(self, job: WorkerJob, batches: Iterable[Batch]) -> None:
        # The pool's processes (workers, forkserver, resource tracker) start with the
        # signals a terminal sends blocked, so they never die of them; on this thread
        # they wait until the pool is up (the process's other threads take them).
        held = {signal.SIGINT, signal.SIGQUIT, signal.SIGHUP}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            self._pool = self.make_pool()
            self._futures = [
                self._pool.submit(run_batches, job, [msgspec.json.encode(b)]) for b in batches
            ]
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    async def outstanding(self) -> Outstanding:
        if self._pool is None:
            return Outstanding(1 if self.client_alive() else 0, [])
        running = sum(not f.done() for f in self._futures)
        errors = [
            f"batch {i}: {f.exception()!r}"
            for i, f in enumerate(self._futures)
            if f.done() and not f.cancelled() and f.exception() is not None
        ]
        return Outstanding(running, errors)

    async def terminate(self) -> None:
        await super().terminate()
        for future in self._futures:
            future.cancel()

    async def aclose(self) -> None:
        if self._pool is not None:
            await anyio.to_thread.run_sync(
                functools.partial(self._pool.shutdown, wait=True, cancel_futures=True)
            )


class MultiprocessingExecutor(FuturesExecutor):
    Config: ClassVar[type[msgspec.Struct]] = MultiprocessingConfig

    def make_pool(self) -> concurrent.futures.Executor:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self.config.processes,
            mp_context=multiprocessing.get_context("forkserver"),
            **pool_initializer(),
        )

    async def slot_groups(self, nprocs: int) -> int:
        return int(self.config.processes)
