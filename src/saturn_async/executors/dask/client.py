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

distributed's client blocks: every call to it runs in a worker thread.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from typing import Any, Literal

import anyio
import anyio.to_thread
import msgspec

from saturn_async.exceptions import InputError, MissingExtraError
from saturn_async.executors.abc import Executor, Outstanding
from saturn_async.executors.jobs import DaskEvent, DaskQueue, DaskResource, ResultsVia, WorkerJob
from saturn_async.executors.worker import run_batches
from saturn_async.plugins import load_object
from saturn_async.spec.models import Batch
from saturn_async.sweep.state import SweepRecord

try:
    import distributed
except ImportError as exc:
    raise MissingExtraError("DaskExecutor", "dask") from exc


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
    def detaches(self) -> bool:
        """A cluster started by ``saturn run`` itself ends with it, so nothing detaches."""
        return self.address is not None

    async def client(self) -> distributed.Client:
        if self._client is None:
            self._client = await anyio.to_thread.run_sync(self._connect)
        return self._client

    def _connect(self) -> distributed.Client:
        # Imported here: at module level it would be the first to find distributed
        # missing, and name the Dask results backend instead of DaskExecutor.
        from saturn_async.executors.dask.queue import connect

        try:
            if self.address is not None:
                return connect(self.address, set_as_default=True)
            factory: Any = load_object(
                self.config.cluster_class,
                source=self.record.source,
                field="$.executor.cluster_class",
            )
            self._cluster = factory(**self.config.cluster_kwargs)
            return distributed.Client(self._cluster)
        except OSError as exc:
            raise InputError(
                f"cannot reach the Dask scheduler at {self.address}: {exc}",
                source=self.record.source,
                field="$.executor.scheduler_address",
            ) from exc

    async def slot_groups(self, nprocs: int) -> int:
        """Batches the cluster runs at once: one per worker thread."""
        client = await self.client()
        info = await anyio.to_thread.run_sync(client.scheduler_info)
        workers = info.get("workers", {}).values()
        return max(1, sum(int(w.get("nthreads", 1)) for w in workers))

    def _event_name(self) -> str:
        return f"saturn-terminate-{self.record.name}-{self.record.created}"

    def stop_via(self) -> DaskEvent:
        return DaskEvent(self._event_name())

    def slots_via(self) -> DaskResource | None:
        name = self.config.slots_resource
        return None if name is None else DaskResource(name)

    async def results_via(self, queue: Literal["dask", "ray"], name: str) -> ResultsVia | None:
        if queue != "dask":
            return None
        client = await self.client()
        info = await anyio.to_thread.run_sync(client.scheduler_info)
        return DaskQueue(name, str(info["address"]))

    async def run(self, job: WorkerJob, batches: Iterable[Batch]) -> None:
        client = await self.client()
        await anyio.to_thread.run_sync(self._submit, client, job, batches)

    def _submit(self, client: distributed.Client, job: WorkerJob, batches: Iterable[Batch]) -> None:
        token = self.record.created.replace(":", "").replace("+", "")
        futures = [
            client.submit(
                run_batches,
                job,
                [msgspec.json.encode(batch)],
                key=f"saturn-{self.record.name}-{token}-{index}",
                pure=False,
            )
            for index, batch in enumerate(batches)
        ]
        client.publish_dataset(futures, name=dataset_name(self.record))
        self._batch_futures = futures
        if self._cluster is None:
            self.record.handle["scheduler_address"] = client.scheduler_info()["address"]

    async def _futures(self) -> list[distributed.Future[Any]]:
        """The sweep's batch futures, fetched once: their status follows the scheduler's."""
        if self._batch_futures is None:
            client = await self.client()
            self._batch_futures = await anyio.to_thread.run_sync(self._published, client)
        return self._batch_futures

    def _published(self, client: distributed.Client) -> list[distributed.Future[Any]]:
        name = dataset_name(self.record)
        return list(client.get_dataset(name)) if name in client.list_datasets() else []

    async def outstanding(self) -> Outstanding:
        futures = await self._futures()
        client = await self.client()
        return await anyio.to_thread.run_sync(_outstanding, client, futures, self._returned)

    async def until_changed(self, longest: float) -> None:
        """Until a batch future that is pending now ends, at most ``longest`` seconds."""
        pending = [f for f in await self._futures() if f.status == "pending"]
        if not pending:
            await anyio.sleep(longest)
            return
        # Abandoned on cancel: the thread ends by itself within ``longest``.
        await anyio.to_thread.run_sync(_first_ended, pending, longest, abandon_on_cancel=True)

    async def terminate(self) -> None:
        client = await self.client()
        futures = await self._futures()
        await anyio.to_thread.run_sync(self._terminate, client, futures)

    def _terminate(
        self, client: distributed.Client, futures: list[distributed.Future[Any]]
    ) -> None:
        distributed.Event(self._event_name(), client=client).set()
        running = {key for keys in client.processing().values() for key in keys}
        client.cancel([f for f in futures if f.key not in running and f.status == "pending"])

    async def forget(self) -> None:
        """Drop the published futures (after ``collect`` has everything)."""
        client = await self.client()
        await anyio.to_thread.run_sync(self._unpublish, client)

    def _unpublish(self, client: distributed.Client) -> None:
        name = dataset_name(self.record)
        # A scheduler that cannot be reached (lost, its futures cancelled) holds nothing
        # of the sweep any more, or will time it out: there is nothing left to release.
        with contextlib.suppress(OSError):
            if name in client.list_datasets():
                client.unpublish_dataset(name)

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._close)

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()


def _first_ended(futures: list[distributed.Future[Any]], longest: float) -> None:
    # Cancelled futures (the scheduler lost and reconnected) end the wait: outstanding()
    # reports them. distributed's CancelledError is asyncio's, which must not reach the
    # event loop as if this task were cancelled.
    with contextlib.suppress(TimeoutError, distributed.client.FuturesCancelledError):
        distributed.wait(futures, timeout=longest, return_when="FIRST_COMPLETED")


def _outstanding(
    client: distributed.Client, futures: list[distributed.Future[Any]], returned: set[object]
) -> Outstanding:
    """What is left, and the outcomes of the batches that ended since (not ``returned``
    yet: their keys are added). Statuses are taken once: a batch that ends meanwhile
    counts as left, and its outcomes come with the next call."""
    statuses = [(future, future.status) for future in futures]
    ended = [f for f, status in statuses if status == "finished" and f.key not in returned]
    outcomes: dict[str, int] = {}
    for summary in client.gather(ended) if ended else []:
        outcomes.update(summary.outcomes)
    returned.update(f.key for f in ended)
    errors = []
    for future, status in statuses:
        if status == "error":
            errors.append(f"batch {future.key}: {future.exception()!r}")
        elif status == "cancelled":
            errors.append(f"batch {future.key}: cancelled")
    pending = sum(status == "pending" for _, status in statuses)
    return Outstanding(pending, errors, outcomes)
