"""A distributed Queue as the :class:`~saturn_async.storage.queue.Channel` of the ``Dask``
results backend.

On a DaskExecutor worker, each finish marker sent is also recorded in the scheduler's
metadata under the batch task's key, ``[key, "finished", location]``, right after it is
queued: Dask reruns a batch whose worker died, and the rerun reads there which runs
finished. The scheduler drops a task key's metadata when it forgets the task.
"""

from __future__ import annotations

import contextlib
from typing import Any

import anyio.to_thread

from saturn_async.exceptions import MissingExtraError
from saturn_async.storage.queue import puts_finish_marker

try:
    import distributed
except ImportError as exc:
    raise MissingExtraError("the Dask results backend", "dask") from exc

CONNECT_TIMEOUT = "10s"
"""How long connecting to a Dask scheduler may take."""
_HANDSHAKES = 3


def connect(address: str, *, set_as_default: bool = False) -> distributed.Client:
    """A client of the scheduler at ``address``; OSError when it cannot be reached.

    The handshake is tried up to 3 times: distributed asserts that the scheduler's first
    batch of messages holds only ``stream-start``, and under load it can hold more (seen
    once in CI, as an AssertionError out of ``saturn terminate``).
    """

    def attempt() -> distributed.Client:
        return distributed.Client(address, timeout=CONNECT_TIMEOUT, set_as_default=set_as_default)

    for _ in range(_HANDSHAKES - 1):
        with contextlib.suppress(AssertionError):
            return attempt()
    try:
        return attempt()
    except AssertionError as exc:
        raise OSError(f"the handshake failed {_HANDSHAKES} times ({exc!r})") from exc


def results_queue(name: str, client: distributed.Client) -> distributed.Queue:
    return distributed.Queue(name, client=client)


def current_task() -> Any:
    """The key of the Dask task this thread runs, or None when it runs none."""
    try:
        return distributed.get_worker().get_current_task()
    except (ValueError, KeyError):
        return None


class DaskChannel:
    """Create it on the thread that runs the batch's Dask task: that thread finds the
    worker's client and the task's key (any other executor's worker connects a client
    of its own in :meth:`open`)."""

    def __init__(self, queue_name: str, scheduler_address: str) -> None:
        self.queue_name = queue_name
        self.scheduler_address = scheduler_address
        self._queue: distributed.Queue | None = None
        self._own_client: distributed.Client | None = None
        self._task_key: Any = None
        """The batch task's key on a DaskExecutor worker (finish markers are recorded)."""
        self._client: distributed.Client | None
        try:
            self._client = distributed.get_client()
        except ValueError:
            self._client = None
        else:
            self._task_key = current_task()

    async def open(self) -> None:
        if self._client is None:
            self._own_client = self._client = await anyio.to_thread.run_sync(self._connect)
        self._queue = results_queue(self.queue_name, self._client)

    def _connect(self) -> distributed.Client:
        return connect(self.scheduler_address)

    async def send(self, message: dict[str, Any]) -> None:
        assert self._queue is not None and self._client is not None
        await anyio.to_thread.run_sync(self._queue.put, message)
        if self._task_key is not None and puts_finish_marker(message):
            keys = [self._task_key, "finished", message["location"]]
            await anyio.to_thread.run_sync(self._client.set_metadata, keys, message["data"])

    async def final(self, location: str) -> bytes | None:
        if self._task_key is None:
            return None
        assert self._client is not None
        keys = [self._task_key, "finished", location]
        found = await anyio.to_thread.run_sync(self._client.get_metadata, keys, None)
        return found if isinstance(found, bytes) else None

    async def close(self) -> None:
        if self._own_client is not None:
            await anyio.to_thread.run_sync(self._own_client.close)
