"""The client's end of the ``Ray`` results backend: what the sweep's actor holds."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
import ray

from saturn_async.sweep.collector import Collector


class ActorReceiver:
    """Takes what the sweep's actor holds into the client's results directory."""

    def __init__(self, actor: Callable[[], Awaitable[Any | None]], directory: str) -> None:
        self.actor = actor
        """Looks the actor up (None when it is gone)."""
        self.collector = Collector(directory)

    async def receive(self) -> int:
        actor = await self.actor()
        if actor is None:
            return 0
        return await anyio.to_thread.run_sync(self._receive, actor)

    def _receive(self, actor: Any) -> int:
        messages: list[dict[str, Any]] = ray.get(actor.take.remote())
        for message in messages:
            self.collector.apply(message)
        return len(messages)

    async def aclose(self) -> None:
        return None
