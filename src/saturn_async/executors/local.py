"""Executors whose batches run on the client's machine, inside ``saturn run``'s process tree.

They stop when ``saturn run`` stops, so Ctrl-C stops their runs (as ``batch`` does) rather
than detaching. ``terminate`` from another shell reaches them through a file in the
sweep's state directory, which every supervisor of the sweep watches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any, Self

import anyio
import anyio.abc
import msgspec

from saturn_async.executors.abc import Executor, Outstanding
from saturn_async.executors.jobs import TerminateFile, WorkerJob
from saturn_async.executors.worker import run_job
from saturn_async.spec.models import Batch
from saturn_async.supervisor.process import start_ticks
from saturn_async.sweep.state import terminate_file


class OnClientMachine(Executor):
    """Termination through the sweep's terminate file; liveness through the client pid."""

    def stop_via(self) -> TerminateFile:
        return TerminateFile(terminate_file(self.record.name))

    async def terminate(self) -> None:
        await anyio.Path(terminate_file(self.record.name)).touch(mode=0o600)

    def client_alive(self) -> bool:
        """Whether the ``saturn run`` process that owns the batches still runs."""
        return start_ticks(self.record.client_pid) == self.record.client_started


class LocalConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    class_spec: str


class LocalExecutor(OnClientMachine):
    """Every batch under one supervisor, a task of the client's own event loop: slots are
    shared across batches. Leaving the executor waits for them."""

    Config = LocalConfig

    def __init__(self, config: Any, record: Any) -> None:
        super().__init__(config, record)
        self._stack = contextlib.AsyncExitStack()
        self._tasks: anyio.abc.TaskGroup | None = None
        self._running: bool | None = None
        """None until :meth:`run`; then whether the batches still run."""
        self._error: Exception | None = None

    async def __aenter__(self) -> Self:
        self._tasks = await self._stack.enter_async_context(anyio.create_task_group())
        return self

    async def run(self, job: WorkerJob, batches: Iterable[Batch]) -> None:
        assert self._tasks is not None, "run inside `async with executor`"
        self._running = True
        self._tasks.start_soon(self._run, job, list(batches))  # they run here: held

    async def _run(self, job: WorkerJob, batches: list[Batch]) -> None:
        try:
            await run_job(job, batches)
        except Exception as exc:  # reported by outstanding(), as a pool's futures are
            self._error = exc
        finally:
            self._running = False

    async def outstanding(self) -> Outstanding:
        if self._running is None:
            return Outstanding(1 if self.client_alive() else 0, [])
        errors = [f"batches failed: {self._error!r}"] if self._error else []
        return Outstanding(1 if self._running else 0, errors)

    async def aclose(self) -> None:
        await self._stack.aclose()
