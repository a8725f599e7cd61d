"""``RayExecutor``: one Ray task per batch, owned by a detached actor (``actor.py``) that
outlives ``saturn run``. Each batch task reserves the batch's slots: ``nprocs`` CPUs, or
``nprocs`` of ``slots_resource``, plus ``num_gpus``.

Termination: ``terminate`` sets the actor's flag and cancels the batches that have not
started; running supervisors see the flag within a second and stop their runs (TERM,
then KILL after the grace).

A dead actor (Ray ends its batch tasks with it) is the end of the sweep: ``outstanding``
says so, once its tasks without a status have theirs (``lost.py``).

Without ``address``, ``saturn run`` starts a local Ray instance that ends with it, so the
sweep does not detach (``aclose`` waits for running batches before shutting Ray down).

Ray's client blocks: every call to it runs in a worker thread.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterable
from typing import Any, Literal

import anyio
import anyio.to_thread
import msgspec
import ray
import ray.exceptions
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from saturn_async.exceptions import ExecutorError, InputError
from saturn_async.executors.abc import Executor, Outstanding, ResultsReceiver
from saturn_async.executors.jobs import RayActor, ResultsVia, WorkerJob
from saturn_async.executors.ray.actor import SweepActor, actor_name
from saturn_async.executors.ray.lost import Unreached, mark_lost, recorded_death, unreached
from saturn_async.executors.ray.worker import NAMESPACE
from saturn_async.spec.models import AtLeastOne, Batch, Count, NonNegative
from saturn_async.supervisor.gpu_devices import engine_gpus
from saturn_async.sweep.state import SweepRecord

# How long a Ray address may take to accept a connection before ray.init is tried (which
# would otherwise retry for minutes).
_CONNECT_TIMEOUT = 5.0
_HOST_PORT = re.compile(r"^(?:ray://)?(?P<host>[^:/]+):(?P<port>\d+)$")
# How long aclose() waits, beyond the grace, for a local Ray's batches to stop.
_CLOSE_MARGIN = 30.0
_CLOSE_POLL = 0.2


class RayConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    class_spec: str
    address: str | None = None
    """``auto``, ``host:port`` or ``ray://host:port``; absent: a local Ray for this run."""
    num_cpus: AtLeastOne | None = None
    """CPUs of the local Ray started without ``address`` (default: all)."""
    runtime_env: dict[str, Any] | None = None
    """Passed to ``ray.init`` as the job's runtime environment."""
    num_gpus: NonNegative = 0
    """GPUs each batch reserves (default: what its runs ask for, ``nprocs`` times the
    largest ``gpus_per_run``; Ray's ``CUDA_VISIBLE_DEVICES`` is then the batch's pool)."""
    slots_resource: str | None = None
    """Reserve a batch's ``nprocs`` slots as this custom resource instead of CPUs."""
    resources: dict[str, NonNegative] = msgspec.field(default_factory=dict)
    """Further custom resources each batch reserves."""
    max_retries: Count = 3
    """How many times Ray runs a batch again whose worker died (as Dask's
    ``allowed-failures``, 3 by default); the rerun skips the tasks that have a status."""


class RayExecutor(Executor):
    Config = RayConfig
    starts_in_client_cwd = True

    def __init__(self, config: Any, record: SweepRecord) -> None:
        super().__init__(config, record)
        self._connected = False
        self._actor: Any = None
        self._last = Outstanding(1, [])
        """What ``outstanding`` last learnt; it stands while the actor cannot be reached."""
        self._lost: Outstanding | None = None
        """Once the actor is known dead and its tasks were marked lost."""

    @property
    def detaches(self) -> bool:
        """A local Ray started by ``saturn run`` ends with it, so nothing detaches."""
        return self.config.address is not None

    async def _connect(self) -> None:
        if not self._connected:
            await anyio.to_thread.run_sync(self._init)
            self._connected = True

    def _init(self) -> None:
        local = self.config.address is None
        try:
            self._check_reachable()
            ray.init(
                address=self.config.address,
                num_cpus=self.config.num_cpus if local else None,
                namespace=NAMESPACE,
                runtime_env=self.config.runtime_env,
                include_dashboard=False if local else None,
                log_to_driver=False,
                logging_level=logging.ERROR,
            )
        except (OSError, ValueError, RuntimeError) as exc:
            reason = (str(exc) or repr(exc)).splitlines()[0]
            raise InputError(
                f"cannot start or reach Ray at {self.config.address or 'a local instance'}: "
                f"{reason}",
                source=self.record.source,
                field="$.executor.address",
            ) from exc

    def _check_reachable(self) -> None:
        """Fail fast when a ``host:port`` address does not answer (OSError)."""
        match = _HOST_PORT.match(self.config.address or "")
        if match is not None:
            address = (match["host"], int(match["port"]))
            socket.create_connection(address, timeout=_CONNECT_TIMEOUT).close()

    async def call(self, method: str, *args: Any) -> Any:
        """The actor's ``method(*args)``, or an :class:`Unreached` saying why not."""
        found = await self._find()
        if isinstance(found, Unreached):
            return found
        try:
            return await anyio.to_thread.run_sync(ray.get, getattr(found, method).remote(*args))
        except ray.exceptions.RayActorError as exc:
            return unreached(actor_name(self.record), exc)

    async def _find(self) -> Any:
        """The actor's handle, looked up until found and then kept (calls on it say how
        it died, should it die), or an :class:`Unreached`."""
        if self._actor is not None:
            return self._actor
        if self.config.address is None and not self._connected:
            # The local Ray of the saturn run that dispatched has ended.
            return Unreached("the sweep ran on a local Ray that ended with its saturn run", False)
        await self._connect()
        return await anyio.to_thread.run_sync(self._lookup)

    def _lookup(self) -> Any:
        name = actor_name(self.record)
        try:
            self._actor = ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:  # not known (any more): Ray's actor table may say why
            return recorded_death(name) or Unreached(
                f"the sweep's Ray actor {name} is gone (Ray does not know it)", False
            )
        return self._actor

    async def slot_groups(self, nprocs: int) -> int:
        """Batches the cluster can run at once, by the resource a batch reserves."""
        await self._connect()
        total = await anyio.to_thread.run_sync(ray.cluster_resources)
        resource = self.config.slots_resource or "CPU"
        groups = int(total.get(resource, 0) // nprocs)
        if self.config.num_gpus:
            groups = min(groups, int(total.get("GPU", 0) // self.config.num_gpus))
        return max(1, groups)

    def _options(self, batch: Batch) -> dict[str, Any]:
        slots = batch.nprocs or 1
        resources = dict(self.config.resources)
        if self.config.slots_resource is not None:
            resources[self.config.slots_resource] = slots
        return {
            "num_cpus": 0 if self.config.slots_resource is not None else slots,
            "num_gpus": self.config.num_gpus or engine_gpus(batch),
            "resources": resources,
            "max_retries": self.config.max_retries,
        }

    async def run(self, job: WorkerJob, batches: Iterable[Batch]) -> None:
        await self._connect()
        await anyio.to_thread.run_sync(self._submit, job, batches)

    def _submit(self, job: WorkerJob, batches: Iterable[Batch]) -> None:
        # On this client's node (with ray://, the head's): placed freely, the actor could
        # land on a worker node, whose loss would then take the whole sweep with it. Not
        # soft: Ray spills a soft one to another node while this one starts a worker.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self._actor = actor = SweepActor.options(  # type: ignore[attr-defined]
            name=actor_name(self.record),
            namespace=NAMESPACE,
            lifetime="detached",
            scheduling_strategy=here,
        ).remote()
        encoded, options = [], []
        for batch in batches:  # built as they come: one pass
            encoded.append(msgspec.json.encode(batch))
            options.append(self._options(batch))
        ray.get(actor.submit.remote(job, encoded, options))

    def stop_via(self) -> RayActor:
        return RayActor(actor_name(self.record))

    async def results_via(self, queue: Literal["dask", "ray"], name: str) -> ResultsVia | None:
        return RayActor(actor_name(self.record)) if queue == "ray" else None

    def receiver(self, channel: ResultsVia, directory: str) -> ResultsReceiver | None:
        if not isinstance(channel, RayActor):
            return None
        from saturn_async.executors.ray.receiver import ActorReceiver

        return ActorReceiver(self.call, directory)

    async def outstanding(self) -> Outstanding:
        """What the actor says; once it is known dead, the sweep's tasks without a status
        are marked lost (once) and no batch is left."""
        if self._lost is not None:
            return self._lost
        found = await self.call("outstanding")
        if not isinstance(found, Unreached):
            batches, errors, outcomes = found
            self._last = Outstanding(batches, errors)
            return Outstanding(batches, errors, outcomes)
        if found.died:
            line = await mark_lost(self.record, found.why)
            if line is None:
                return Outstanding(1, [])  # a run still holds its lease: until it ends
            self._lost = Outstanding(0, [line], lost=True)
            return self._lost
        if self._actor is not None:
            return self._last  # found before, not reached now: Ray may reach it again
        return Outstanding(0, [found.why])

    async def terminate(self) -> None:
        found = await self.call("terminate")
        if isinstance(found, Unreached) and not found.died and self._actor is not None:
            raise ExecutorError(f"{found.why}; nothing was stopped: try again")

    async def forget(self) -> None:
        found = await self._find()
        if not isinstance(found, Unreached):
            await anyio.to_thread.run_sync(ray.kill, found)

    async def aclose(self) -> None:
        if not self._connected:
            return
        if self.config.address is None:  # the local Ray this process started
            # Shutting down kills the workers: let running batches stop their runs first.
            wait = float(self.record.handle.get("grace", 10.0)) + _CLOSE_MARGIN
            with anyio.move_on_after(wait):
                while (await self.outstanding()).batches:  # noqa: ASYNC110 - remote
                    await anyio.sleep(_CLOSE_POLL)
        await anyio.to_thread.run_sync(ray.shutdown)
        self._connected = False
