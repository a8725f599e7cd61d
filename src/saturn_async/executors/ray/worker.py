"""A batch task's view of the sweep's Ray actor: its stop signal and its results channel.

Should the actor die, Ray ends the batch tasks it owns. Until then (or if it does not) a
batch goes on: its runs record their outcomes where results are LocalDir or S3, and no
stop signal can come any more. A results channel that cannot reach the actor fails each
send as storage that stays away does (the run's outcome is kept in the staging
directory); the batch goes on. An actor that cannot be reached now
(``ActorUnavailableError``: a partition, say) is asked again.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.to_thread
import ray
import ray.exceptions

from saturn_async.exceptions import StorageError

NAMESPACE = "saturn_async"
# How often a supervisor asks the actor whether the sweep was terminated.
_ACTOR_POLL = 1.0
_log = logging.getLogger(__name__)


def ray_reason(exc: BaseException) -> str:
    """Ray's reason for an actor error: the last line of its message ("The actor is dead
    because ...")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def result(ref: Any) -> Any:
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
        self.name = name
        self._actor = ray.get_actor(name, namespace=NAMESPACE)
        self._started_before = False

    def is_set(self) -> bool:
        """Called once as the batch starts; registers it with the actor."""
        task_id = ray.get_runtime_context().get_task_id()
        terminated, self._started_before = result(self._actor.start.remote(task_id))
        return bool(terminated)

    def started_before(self) -> bool:
        return self._started_before

    def _poll(self) -> bool | None:
        """Whether the sweep was terminated; None once the actor died."""
        try:
            return bool(result(self._actor.is_terminated.remote()))
        except ray.exceptions.ActorUnavailableError:
            return False  # not reached now: asked again
        except ray.exceptions.RayActorError as exc:
            _log.warning("saturn: %s died; this batch's runs go on: %s", self.name, ray_reason(exc))
            return None

    async def wait(self) -> None:
        while (terminated := await anyio.to_thread.run_sync(self._poll)) is False:  # noqa: ASYNC110
            await anyio.sleep(_ACTOR_POLL)
        if terminated is None:
            await anyio.sleep_forever()  # nothing can terminate the sweep any more


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
        await self._ask("put", message, location=str(message.get("location")), to="send")

    async def final(self, location: str) -> bytes | None:
        found = await self._ask("final", location, location=location, to="ask for")
        return found if isinstance(found, bytes) else None

    async def _ask(self, method: str, arg: Any, *, location: str, to: str) -> Any:
        """The actor's ``method(arg)``; StorageError when the actor is not reached."""
        ref = getattr(self._actor, method).remote(arg)
        try:
            return await anyio.to_thread.run_sync(result, ref)
        except ray.exceptions.RayActorError as exc:
            what = f"{to} the sweep's Ray actor {self.name}"
            raise StorageError(location, what, ray_reason(exc)) from exc

    async def close(self) -> None:
        return None
