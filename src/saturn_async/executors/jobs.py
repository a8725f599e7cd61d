"""What the client sends a worker with its batches: :class:`WorkerJob`, and what it returns.

The backend-specific parts are tagged unions of small Structs, so mypy checks every field
and a worker decodes exactly the variant it was sent:

* ``stop``: how a worker learns that the sweep was terminated;
* ``results``: the channel that carries every output to the client (results backends
  ``Dask`` and ``Ray``), instead of the storage the batches name;
* ``slots``: how the batches running on one worker share its run slots.

This module imports nothing of saturn_async: both sides of every executor read it.
"""

from __future__ import annotations

import msgspec


class TerminateFile(msgspec.Struct, frozen=True, tag="terminate-file"):
    """Stop when this file exists (executors on the client's machine)."""

    path: str


class DaskEvent(msgspec.Struct, frozen=True, tag="dask-event"):
    """Stop when this distributed Event is set (DaskExecutor)."""

    name: str


class RayActor(msgspec.Struct, frozen=True, tag="ray-actor"):
    """The sweep's Ray actor (RayExecutor): it says whether the sweep was terminated,
    and it keeps the outputs of results backend ``Ray`` until the client takes them."""

    name: str


class DaskQueue(msgspec.Struct, frozen=True, tag="dask-queue"):
    """Ship every output through this distributed Queue (results backend ``Dask``)."""

    name: str
    scheduler: str
    """The address of the scheduler holding the queue."""


class DaskResource(msgspec.Struct, frozen=True, tag="dask-resource"):
    """The batches on one Dask worker share as many run slots as the worker's resource
    of this name."""

    name: str


StopVia = TerminateFile | DaskEvent | RayActor
ResultsVia = DaskQueue | RayActor
SlotsVia = DaskResource


class WorkerJob(msgspec.Struct, kw_only=True, frozen=True):
    """How a worker runs a sweep's batches; the same for every batch of the sweep."""

    sweep: str
    submitted: str | None = None
    """When ``saturn run`` dispatched the sweep: the time of every run's submitted event."""
    grace: float = 10.0
    log_chunk_seconds: float = 60.0
    stop: StopVia | None = None
    results: ResultsVia | None = None
    slots: SlotsVia | None = None
    client_cwd: str | None = None
    """The working directory of ``saturn run``: batches without ``working_dir`` start
    their runs there when this worker has it, else in the worker's own (with a warning)."""


class WorkerSummary(msgspec.Struct, kw_only=True, frozen=True):
    """What a worker returns for its batches."""

    succeeded: int
    failed: int
    skipped: int
    not_started: int
    terminated: bool
    outcomes: dict[str, int] = msgspec.field(default_factory=dict)
    """The final status code of every run this worker recorded, by output location: the
    client learns its batch's outcomes from this result, without reading them back."""
