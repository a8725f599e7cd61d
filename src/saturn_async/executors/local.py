"""Executors whose batches run on the client's machine, inside ``saturn run``'s process tree.

They stop when ``saturn run`` stops, so Ctrl-C stops their runs (as ``batch`` does) rather
than detaching. ``terminate`` from another shell reaches them through a file in the
sweep's state directory, which every supervisor of the sweep watches.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import msgspec

from saturn_async.executors.base import Executor, Outstanding
from saturn_async.executors.worker import WorkerJob, run_batches
from saturn_async.spec.models import Batch
from saturn_async.supervisor.process import start_ticks
from saturn_async.sweep.state import terminate_file


class OnClientMachine(Executor):
    """Termination through the sweep's terminate file; liveness through the client pid."""

    def worker_job(self) -> dict[str, Any]:
        return {"terminate_file": terminate_file(self.record.name)}

    def terminate(self) -> None:
        Path(terminate_file(self.record.name)).touch(mode=0o600)

    def client_alive(self) -> bool:
        """Whether the ``saturn run`` process that owns the batches still runs."""
        return start_ticks(self.record.client_pid) == self.record.client_started


class LocalConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    class_spec: str


class LocalExecutor(OnClientMachine):
    """Every batch under one supervisor in this process: slots are shared across batches."""

    Config = LocalConfig

    def __init__(self, config: Any, record: Any) -> None:
        super().__init__(config, record)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def dispatch(self, job: WorkerJob, batches: list[Batch]) -> None:
        def target() -> None:
            try:
                run_batches(job, [msgspec.json.encode(b) for b in batches])
            except BaseException as exc:
                self._error = exc

        self._thread = threading.Thread(target=target, name="saturn-local", daemon=True)
        self._thread.start()

    def outstanding(self) -> Outstanding:
        if self._thread is None:
            return Outstanding(1 if self.client_alive() else 0, [])
        errors = [f"batches failed: {self._error!r}"] if self._error else []
        return Outstanding(1 if self._thread.is_alive() else 0, errors)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join()
