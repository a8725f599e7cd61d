"""The executor interface: how a sweep's batches reach workers, and how they are stopped.

An executor is built from its section of the sweep file (``Config``, checked with field
paths) and the sweep's record, and used as an async context manager in the caller's
event loop. ``saturn run`` calls :meth:`Executor.run` once; ``collect`` and
``terminate`` build the executor again from the record (in another process, maybe days
later) and call :meth:`Executor.outstanding` and :meth:`Executor.terminate`.

Every method that talks to an engine is a coroutine. Backends whose client blocks
(distributed, ray) run those calls in a worker thread themselves; none starts an event
loop. What a worker is sent is in :mod:`saturn_async.executors.jobs`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, ClassVar, Literal, Protocol, Self

import anyio
import msgspec

from saturn_async.executors.jobs import ResultsVia, SlotsVia, StopVia, WorkerJob
from saturn_async.spec.models import Batch
from saturn_async.sweep.state import SweepRecord


class Outstanding(msgspec.Struct, frozen=True):
    """Batches not finished yet, and why finished ones failed (one line each)."""

    batches: int
    errors: list[str]
    outcomes: dict[str, int] = msgspec.field(default_factory=dict)
    """Final status codes, by task location, that batches which ended since the last
    call returned (Dask, Ray): the client need not read them back from storage."""
    lost: bool = False
    """The engine lost the whole sweep (Ray: the sweep's actor died), so no batch is
    left; ``errors`` say why, and what became of the tasks without a status."""


class ResultsReceiver(Protocol):
    """The client's end of a results channel: writes what waits on it into the sweep's
    results directory."""

    async def receive(self) -> int:
        """Take every output waiting now; returns how many messages there were."""

    async def aclose(self) -> None: ...


class Executor(ABC):
    Config: ClassVar[type[msgspec.Struct]]
    starts_in_client_cwd: ClassVar[bool] = False
    """True when workers run elsewhere, so a sweep without ``working_dir`` starts its runs
    in the client's working directory where a worker has it (Dask, Ray)."""

    def __init__(self, config: Any, record: SweepRecord) -> None:
        self.config = config
        self.record = record

    @property
    def detaches(self) -> bool:
        """True when batches keep running after ``saturn run`` exits (Ctrl-C detaches)."""
        return False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def check(self) -> None:
        """Refuse, before anything is recorded, a sweep this executor cannot run."""
        return None

    def describe(self, job: WorkerJob, batches: Iterable[Batch]) -> Iterator[str]:
        """What :meth:`run` would send, for ``saturn run --dry-run``: the batch files,
        one JSON line each, made as they are written (KubernetesExecutor: its manifests;
        SlurmExecutor: its sbatch script)."""
        for batch in batches:
            yield msgspec.json.encode(batch).decode() + "\n"

    async def slot_groups(self, nprocs: int) -> int:
        """How many batches can run at once (sizes ``batch_size: auto``)."""
        return 1

    def stop_via(self) -> StopVia | None:
        """How workers learn that the sweep was terminated (None: only by a signal)."""
        return None

    def slots_via(self) -> SlotsVia | None:
        """How batches on one worker share its run slots (None: each has its own)."""
        return None

    async def results_via(self, queue: Literal["dask", "ray"], name: str) -> ResultsVia | None:
        """The channel of kind ``queue`` this executor offers to carry the outputs of
        sweep run ``name`` (results backends ``Dask`` and ``Ray``), or None."""
        return None

    def receiver(self, channel: ResultsVia, directory: str) -> ResultsReceiver | None:
        """The client's end of ``channel`` when only this executor can read it (Ray's
        actor), else None."""
        return None

    @abstractmethod
    async def run(self, job: WorkerJob, batches: Iterable[Batch]) -> None:
        """Start every batch and return. May store what it needs in ``record.handle``.

        ``batches`` may be built as they are iterated (a sweep's plan, a million runs):
        iterate them once, and keep what is sent rather than the batches."""

    @abstractmethod
    async def outstanding(self) -> Outstanding:
        """How many batches are still queued or running."""

    async def until_changed(self, longest: float) -> None:
        """Return once a batch may have ended, at the latest after ``longest`` seconds:
        the wait of the follow loop between two looks (default: ``longest``)."""
        await anyio.sleep(longest)

    @abstractmethod
    async def terminate(self) -> None:
        """Cancel queued batches and ask running ones to stop (TERM, then KILL after grace)."""

    async def forget(self) -> None:
        """Release what the executor keeps for a finished sweep (Dask's published futures)."""
        return None

    async def aclose(self) -> None:
        """Release the client side (an executor running batches here waits for them)."""
        return None
