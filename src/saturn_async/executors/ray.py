"""``RayExecutor``: one Ray task per batch, owned by a detached actor that outlives ``saturn run``.

``saturn run`` creates the actor ``saturn-<name>-<created>`` (namespace ``saturn_async``),
which submits one task per batch and keeps their object refs. Because the actor owns the
tasks, they keep running after the client goes away, and ``collect`` and ``terminate``
find the actor again by name. Each batch task reserves the batch's slots: ``nprocs`` CPUs,
or ``nprocs`` of ``slots_resource``, plus ``num_gpus``.

Termination: the actor's flag is the sweep's stop signal. Every batch asks the actor when
it starts (which also tells the actor that it started); ``terminate`` sets the flag and
cancels the batches that have not started, and running supervisors see the flag within a
second and stop their runs (TERM, then KILL after the grace).

Retries: Ray runs a batch again (``max_retries`` times) when its worker dies; the actor
sees the same task id start twice, and the rerun skips the tasks that have a status.

Without ``address``, ``saturn run`` starts a local Ray instance that ends with it, so the
sweep does not detach (``close`` waits for running batches before shutting Ray down).
"""

from __future__ import annotations

import logging
import re
import socket
import time
from typing import Any

import anyio
import anyio.to_thread
import msgspec

from saturn_async.exceptions import InputError, MissingExtraError
from saturn_async.executors.base import Executor, Outstanding
from saturn_async.executors.worker import WorkerJob, WorkerSummary, run_batches
from saturn_async.spec.models import AtLeastOne, Batch, Count, NonNegative
from saturn_async.storage.queue import puts_finish_marker
from saturn_async.sweep.state import SweepRecord

try:
    import ray
    import ray.exceptions
except ImportError as exc:
    raise MissingExtraError("RayExecutor", "ray") from exc

NAMESPACE = "saturn_async"
# How often a supervisor asks the actor whether the sweep was terminated.
_ACTOR_POLL = 1.0
# How long a Ray address may take to accept a connection before ray.init is tried (which
# would otherwise retry for minutes).
_CONNECT_TIMEOUT = 5.0
_HOST_PORT = re.compile(r"^(?:ray://)?(?P<host>[^:/]+):(?P<port>\d+)$")
# How long close() waits, beyond the grace, for a local Ray's batches to stop.
_CLOSE_MARGIN = 30.0


class RayConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    class_spec: str
    address: str | None = None
    """``auto``, ``host:port`` or ``ray://host:port``; absent: a local Ray for this run."""
    num_cpus: AtLeastOne | None = None
    """CPUs of the local Ray started without ``address`` (default: all)."""
    runtime_env: dict[str, Any] | None = None
    """Passed to ``ray.init`` as the job's runtime environment."""
    num_gpus: NonNegative = 0
    """GPUs each batch reserves."""
    slots_resource: str | None = None
    """Reserve a batch's ``nprocs`` slots as this custom resource instead of CPUs."""
    resources: dict[str, NonNegative] = msgspec.field(default_factory=dict)
    """Further custom resources each batch reserves."""
    max_retries: Count = 3
    """How many times Ray runs a batch again whose worker died (as Dask's
    ``allowed-failures``, 3 by default); the rerun skips the tasks that have a status."""


def actor_name(record: SweepRecord) -> str:
    """Unique per run of a sweep, like Dask's dataset name."""
    return f"saturn-{record.name}-{record.created}"


@ray.remote
def _run_batch(job: WorkerJob, batch: bytes) -> WorkerSummary:
    return run_batches(job, [batch])


@ray.remote(num_cpus=0, max_restarts=0)
class SweepActor:
    """Owns a sweep's batch tasks; its flag tells the batches to stop."""

    def __init__(self) -> None:
        self.refs: list[Any] = []
        self.started: set[str] = set()
        self.terminated = False
        self.errors: dict[int, str] = {}
        self.messages: list[dict[str, Any]] = []
        self.finals: dict[str, bytes] = {}
        """The finish markers put (results backend Ray), for batches Ray retries."""

    def submit(self, job: WorkerJob, batches: list[bytes], options: list[dict[str, Any]]) -> None:
        self.refs = [
            _run_batch.options(**opts).remote(job, batch)
            for batch, opts in zip(batches, options, strict=True)
        ]

    def start(self, task_id: str) -> tuple[bool, bool]:
        """A batch starts: remember it (never cancel it); say whether to stop, and
        whether it started before (Ray retries a batch whose worker died, same task id)."""
        before = task_id in self.started
        self.started.add(task_id)
        return self.terminated, before

    def is_terminated(self) -> bool:
        return self.terminated

    def terminate(self) -> None:
        self.terminated = True
        for ref in self.refs:
            if ref.task_id().hex() not in self.started:
                ray.cancel(ref)

    def put(self, message: dict[str, Any]) -> None:
        """An output of a task (results backend Ray), kept until the client takes it."""
        self.messages.append(message)
        if puts_finish_marker(message):
            self.finals[message["location"]] = message["data"]

    def final(self, location: str) -> bytes | None:
        return self.finals.get(location)

    def take(self) -> list[dict[str, Any]]:
        taken, self.messages = self.messages, []
        return taken

    def outstanding(self) -> tuple[int, list[str], dict[str, int]]:
        """Batches not finished, one line for each that raised or was cancelled, and the
        outcomes the batches that ended since the last call returned."""
        if not self.refs:
            return 0, [], {}
        ready, not_ready = ray.wait(self.refs, num_returns=len(self.refs), timeout=0)
        done = {id(ref) for ref in ready}
        outcomes: dict[str, int] = {}
        for index, ref in enumerate(self.refs):
            if id(ref) in done and index not in self.errors:
                self.errors[index], returned = _result_of(ref)
                outcomes.update(returned)
        errors = [f"batch {i}: {e}" for i, e in sorted(self.errors.items()) if e]
        return len(not_ready), errors, outcomes


def _result_of(ref: Any) -> tuple[str, dict[str, int]]:
    """('', the outcomes it returned) when the batch task returned, else (why it did
    not, {})."""
    try:
        summary: WorkerSummary = ray.get(ref, timeout=0)
    except ray.exceptions.TaskCancelledError:
        return "cancelled", {}
    except ray.exceptions.RayError as exc:
        return repr(exc).splitlines()[0], {}
    return "", summary.outcomes


class RayExecutor(Executor):
    Config = RayConfig
    starts_in_client_cwd = True

    def __init__(self, config: Any, record: SweepRecord) -> None:
        super().__init__(config, record)
        self._connected = False

    @property
    def detaches(self) -> bool:  # type: ignore[override]
        """A local Ray started by ``saturn run`` ends with it, so nothing detaches."""
        return self.config.address is not None

    def _connect(self) -> None:
        if self._connected:
            return
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
        self._connected = True

    def _check_reachable(self) -> None:
        """Fail fast when a ``host:port`` address does not answer (OSError)."""
        match = _HOST_PORT.match(self.config.address or "")
        if match is not None:
            address = (match["host"], int(match["port"]))
            socket.create_connection(address, timeout=_CONNECT_TIMEOUT).close()

    def actor(self) -> Any | None:
        """The sweep's actor, or None when it is gone (forgotten by another command, or its
        Ray ended). Looked up each time: a cached handle would outlive a kill elsewhere."""
        if self.config.address is None and not self._connected:
            return None  # the local Ray of the saturn run that dispatched has ended
        self._connect()
        try:
            return ray.get_actor(actor_name(self.record), namespace=NAMESPACE)
        except ValueError:
            return None

    def slot_groups(self, nprocs: int) -> int:
        """Batches the cluster can run at once, by the resource a batch reserves."""
        self._connect()
        total = ray.cluster_resources()
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
            "num_gpus": self.config.num_gpus,
            "resources": resources,
            "max_retries": self.config.max_retries,
        }

    def dispatch(self, job: WorkerJob, batches: list[Batch]) -> None:
        self._connect()
        actor = SweepActor.options(  # type: ignore[attr-defined]
            name=actor_name(self.record), namespace=NAMESPACE, lifetime="detached"
        ).remote()
        ray.get(
            actor.submit.remote(
                job,
                [msgspec.json.encode(b) for b in batches],
                [self._options(b) for b in batches],
            )
        )

    def worker_job(self) -> dict[str, Any]:
        return {"terminate_actor": actor_name(self.record)}

    def results_channel(self) -> dict[str, str] | None:
        return {"results_actor": actor_name(self.record)}

    def results_drain(self, directory: str) -> ActorDrain:
        return ActorDrain(self, directory)

    def outstanding(self) -> Outstanding:
        actor = self.actor()
        if actor is None:
            return Outstanding(0, [self._gone()])
        batches, errors, outcomes = ray.get(actor.outstanding.remote())
        return Outstanding(batches, errors, outcomes)

    def _gone(self) -> str:
        if self.config.address is None:
            return "the sweep ran on a local Ray that ended with its saturn run"
        return f"the sweep's Ray actor {actor_name(self.record)} is gone"

    def terminate(self) -> None:
        actor = self.actor()
        if actor is not None:
            ray.get(actor.terminate.remote())

    def forget(self) -> None:
        actor = self.actor()
        if actor is not None:
            ray.kill(actor)

    def close(self) -> None:
        if not self._connected:
            return
        if self.config.address is None:  # the local Ray this process started
            # Shutting down kills the workers: let running batches stop their runs first.
            deadline = time.monotonic() + float(self.record.handle.get("grace", 10.0))
            deadline += _CLOSE_MARGIN
            while self.outstanding().batches and time.monotonic() < deadline:
                time.sleep(0.2)
        ray.shutdown()
        self._connected = False


def _result(ref: Any) -> Any:
    """The value of ``ref``, waited for on a batch task without yielding its CPUs.

    ``ray.get`` in a task tells the raylet that the task is blocked, and Ray then lends
    its CPUs to other tasks: a queued batch would start beside the running one, and the
    node would run more runs than the batches reserved. Waiting on the ref's future
    does not tell the raylet.
    """
    return ref.future().result()


class TerminateActor:
    """The sweep's actor seen from a batch task: the stop signal of ``run_batches``."""

    def __init__(self, name: str) -> None:
        self._actor = ray.get_actor(name, namespace=NAMESPACE)
        self._started_before = False

    def is_set(self) -> bool:
        """Called once as the batch starts; registers it with the actor."""
        task_id = ray.get_runtime_context().get_task_id()
        terminated, self._started_before = _result(self._actor.start.remote(task_id))
        return bool(terminated)

    def started_before(self) -> bool:
        return self._started_before

    def _poll(self) -> bool:
        return bool(_result(self._actor.is_terminated.remote()))

    async def wait(self) -> None:
        while not await anyio.to_thread.run_sync(self._poll):  # noqa: ASYNC110 - remote
            await anyio.sleep(_ACTOR_POLL)


class ActorChannel:
    """The sweep's actor as the channel of the ``Ray`` results backend (on a batch task)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._actor: Any = None

    async def open(self) -> None:
        self._actor = await anyio.to_thread.run_sync(self._lookup)

    def _lookup(self) -> Any:
        return ray.get_actor(self.name, namespace=NAMESPACE)

    async def send(self, message: dict[str, Any]) -> None:
        # One call at a time: a worker's messages reach the actor in order.
        await anyio.to_thread.run_sync(_result, self._actor.put.remote(message))

    async def final(self, location: str) -> bytes | None:
        found = await anyio.to_thread.run_sync(_result, self._actor.final.remote(location))
        return found if isinstance(found, bytes) else None

    async def close(self) -> None:
        return None


class ActorDrain:
    """Takes what the sweep's actor holds into the client's results directory."""

    def __init__(self, executor: RayExecutor, directory: str) -> None:
        from saturn_async.sweep.collector import Collector

        self.executor = executor
        self.collector = Collector(directory)

    def drain(self) -> int:
        actor = self.executor.actor()
        if actor is None:
            return 0
        messages: list[dict[str, Any]] = ray.get(actor.take.remote())
        for message in messages:
            self.collector.apply(message)
        return len(messages)

    def close(self) -> None:
        return None
