"""``DaskExecutor``: one Dask task per batch on a scheduler that outlives ``saturn run``.

The batch futures are published on the scheduler as the dataset
``saturn-<name>-<created>``, so they keep running (and keep their outcome) after the
client goes away, and ``collect`` finds them again from the sweep's record.
``terminate`` sets the distributed Event the supervisors watch, cancels batches not yet
running, and waits for the running ones to stop.

Slots: a worker thread runs one batch at a time, with the batch's ``nprocs`` slots. With
``slots_resource: NAME`` and workers started with ``--resources NAME=SLOTS``, the batches
running on one worker (up to its thread count) share its SLOTS run slots instead, so a
batch finishing its last runs leaves its idle slots to the others (docs/executors.md).
"""

from __future__ import annotations

import os
from typing import Any

import anyio.to_thread
import msgspec

from saturn_async.exceptions import InputError, MissingExtraError
from saturn_async.executors.base import Executor, Outstanding
from saturn_async.executors.worker import WorkerJob, run_batches
from saturn_async.plugins import load_object
from saturn_async.spec.models import Batch
from saturn_async.sweep.state import SweepRecord

try:
    import distributed
except ImportError as exc:
    raise MissingExtraError("DaskExecutor", "dask") from exc
# How often a supervisor looks at the terminate Event.
_EVENT_POLL = 1.0


class DaskConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    class_spec: str
    scheduler_address: str | None = None
    """``tcp://host:port``; default ``$DASK_SCHEDULER_ADDRESS``, else ``cluster_class``."""
    cluster_class: str = "distributed:LocalCluster"
    cluster_kwargs: dict[str, Any] = msgspec.field(default_factory=dict)
    slots_resource: str | None = None


def dataset_name(record: SweepRecord) -> str:
    """Unique per run of a sweep, so sweeps of one name on a shared scheduler (two users,
    or ``--replace``) never take each other's batches."""
    return f"saturn-{record.name}-{record.created}"


class DaskExecutor(Executor):
    Config = DaskConfig
    starts_in_client_cwd = True

    def __init__(self, config: Any, record: Any) -> None:
        super().__init__(config, record)
        self._cluster: Any = None
        self._client: distributed.Client | None = None
        self._batch_futures: list[distributed.Future[Any]] | None = None
        self._returned: set[object] = set()
        """The keys of the batches whose outcomes ``outstanding`` has returned."""

    @property
    def address(self) -> str | None:
        stored = self.record.handle.get("scheduler_address")
        return stored or self.config.scheduler_address or os.environ.get("DASK_SCHEDULER_ADDRESS")

    @property
    def detaches(self) -> bool:  # type: ignore[override]
        """A cluster started by ``saturn run`` itself ends with it, so nothing detaches."""
        return self.address is not None

    def client(self) -> distributed.Client:
        # Imported here: at module level it would be the first to find distributed
        # missing, and name the Dask results backend instead of DaskExecutor.
        from saturn_async.storage.dask_queue import connect

        if self._client is None:
            try:
                if self.address is not None:
                    self._client = connect(self.address, set_as_default=True)
                else:
                    factory: Any = load_object(
                        self.config.cluster_class,
                        source=self.record.source,
                        field="$.executor.cluster_class",
                    )
                    self._cluster = factory(**self.config.cluster_kwargs)
                    self._client = distributed.Client(self._cluster)
            except OSError as exc:
                raise InputError(
                    f"cannot reach the Dask scheduler at {self.address}: {exc}",
                    source=self.record.source,
                    field="$.executor.scheduler_address",
                ) from exc
        return self._client

    def slot_groups(self, nprocs: int) -> int:
        """Batches the cluster runs at once: one per worker thread."""
        workers = self.client().scheduler_info().get("workers", {}).values()
        return max(1, sum(int(w.get("nthreads", 1)) for w in workers))

    def _event_name(self) -> str:
        return f"saturn-terminate-{self.record.name}-{self.record.created}"

    def dispatch(self, job: WorkerJob, batches: list[Batch]) -> None:
        client = self.client()
        token = self.record.created.replace(":", "").replace("+", "")
        futures = []
        for index, batch in enumerate(batches):
            futures.append(
                client.submit(
                    run_batches,
                    job,
                    [msgspec.json.encode(batch)],
                    key=f"saturn-{self.record.name}-{token}-{index}",
                    pure=False,
                )
            )
        name = dataset_name(self.record)
        client.publish_dataset(futures, name=name)
        self._batch_futures = futures
        if self._cluster is None:
            self.record.handle["scheduler_address"] = client.scheduler_info()["address"]

    def _futures(self) -> list[distributed.Future[Any]]:
        """The sweep's batch futures, fetched once: their status follows the scheduler's."""
        if self._batch_futures is None:
            name = dataset_name(self.record)
            client = self.client()
            found = client.get_dataset(name) if name in client.list_datasets() else []
            self._batch_futures = list(found)
        return self._batch_futures

    def outstanding(self) -> Outstanding:
        futures = self._futures()
        errors = []
        for future in futures:
            if future.status == "error":
                errors.append(f"batch {future.key}: {future.exception()!r}")
            elif future.status == "cancelled":
                errors.append(f"batch {future.key}: cancelled")
        ended = [f for f in futures if f.status == "finished" and f.key not in self._returned]
        outcomes: dict[str, int] = {}
        for summary in self.client().gather(ended) if ended else []:
            outcomes.update(summary.outcomes)
        self._returned.update(f.key for f in ended)
        return Outstanding(sum(f.status == "pending" for f in futures), errors, outcomes)

    def terminate(self) -> None:
        client = self.client()
        distributed.Event(self._event_name(), client=client).set()
        futures = self._futures()
        running = {key for keys in client.processing().values() for key in keys}
        client.cancel([f for f in futures if f.key not in running and f.status == "pending"])

    def worker_job(self) -> dict[str, Any]:
        return {"terminate_event": self._event_name(), "slots_resource": self.config.slots_resource}

    def scheduler_address(self) -> str | None:
        return str(self.client().scheduler_info()["address"])

    def forget(self) -> None:
        """Drop the published futures (after ``collect`` has everything)."""
        name = dataset_name(self.record)
        if name in self.client().list_datasets():
            self.client().unpublish_dataset(name)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()


def worker_resource(name: str) -> int:
    """This Dask worker's resource ``name`` (0 when it has none); call on a task's thread."""
    return int(distributed.get_worker().state.total_resources.get(name, 0))


class TerminateEvent:
    """The sweep's terminate Event, seen from a worker. Create it on the Dask task's
    thread, where ``get_client()`` finds the worker's client."""

    def __init__(self, name: str) -> None:
        self._client = distributed.get_client()
        self._event = distributed.Event(name, client=self._client)

    def is_set(self) -> bool:
        return bool(self._event.is_set())

    def started_before(self) -> bool:
        """Registers this start; True when the batch task started before (Dask runs it
        again when its worker dies). Kept in the scheduler's metadata under the task's
        key, which the scheduler drops with the task."""
        from saturn_async.storage.dask_queue import current_task

        key = current_task()
        if key is None:
            return False
        before = self._client.get_metadata([key, "started"], False)
        self._client.set_metadata([key, "started"], True)
        return bool(before)

    async def wait(self) -> None:
        # Short is_set calls, not Event.wait: a wait left pending when the batch ends
        # would be cancelled inside distributed, which logs it as an error.
        while not await anyio.to_thread.run_sync(self.is_set):  # noqa: ASYNC110 - remote
            await anyio.sleep(_EVENT_POLL)
