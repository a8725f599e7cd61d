"""The executor interface: how a sweep's batches reach workers, and how they are stopped.

An executor is built from its section of the sweep file (``Config``, checked with field
paths) and the sweep's record. ``saturn run`` calls :meth:`Executor.dispatch` once;
``collect`` and ``terminate`` build the executor again from the record (in another
process, maybe days later) and call :meth:`Executor.outstanding` and
:meth:`Executor.terminate`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self

import msgspec

from saturn_async.executors.worker import WorkerJob
from saturn_async.spec.models import Batch
from saturn_async.sweep.state import SweepRecord


class Outstanding(msgspec.Struct, frozen=True):
    """Batches not finished yet, and why finished ones failed (one line each)."""

    batches: int
    errors: list[str]


class Drain(Protocol):
    """Takes the outputs waiting on a results queue into the client's directory."""

    def drain(self) -> int: ...

    def close(self) -> None: ...


class Executor(ABC):
    Config: ClassVar[type[msgspec.Struct]]
    detaches: ClassVar[bool] = False
    """True when batches keep running after ``saturn run`` exits (Ctrl-C detaches)."""
    starts_in_client_cwd: ClassVar[bool] = False
    """True when workers run elsewhere, so a sweep without ``working_dir`` starts its runs
    in the client's working directory where a worker has it (Dask, Ray)."""

    def __init__(self, config: Any, record: SweepRecord) -> None:
        self.config = config
        self.record = record

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def check(self) -> None:
        """Refuse, before anything is recorded, a sweep this executor cannot run."""
        return None

    def describe(self, job: WorkerJob, batches: Iterable[Batch]) -> Iterator[str]:
        """What ``dispatch`` would send, for ``saturn run --dry-run``, in pieces to write
        one after another: the batch files, one JSON line each, each made as it is
        written (KubernetesExecutor: its manifests)."""
        return (msgspec.json.encode(b).decode() + "\n" for b in batches)

    def slot_groups(self, nprocs: int) -> int:
        """How many batches can run at once (sizes ``batch_size: auto``)."""
        return 1

    def worker_job(self) -> dict[str, Any]:
        """Executor-specific WorkerJob fields (how workers learn of termination)."""
        return {}

    def results_channel(self) -> dict[str, str] | None:
        """WorkerJob fields that ship outputs through this executor (results backend Ray)."""
        return None

    def results_drain(self, directory: str) -> Drain | None:
        """What takes those outputs into ``directory`` on the client."""
        return None

    def scheduler_address(self) -> str | None:
        """The Dask scheduler this executor uses, if any (it can carry Dask results)."""
        return None

    @abstractmethod
    def dispatch(self, job: WorkerJob, batches: list[Batch]) -> None:
        """Start every batch; returns at once. May store what it needs in ``record.handle``."""

    @abstractmethod
    def outstanding(self) -> Outstanding:
        """How many batches are still queued or running."""

    @abstractmethod
    def terminate(self) -> None:
        """Cancel queued batches and ask running ones to stop (TERM, then KILL after grace)."""

    def forget(self) -> None:
        """Release what the executor keeps for a finished sweep (Dask's published futures)."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Release the client side (a pool waits for its batches here)."""
