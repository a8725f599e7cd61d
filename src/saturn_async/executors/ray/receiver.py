"""The client's end of the ``Ray`` results backend: what the sweep's actor holds."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread

from saturn_async.sweep.collector import Collector


class ActorReceiver:
    """Takes what the sweep's actor holds into the client's results directory."""

    def __init__(self, call: Callable[..., Awaitable[Any]], directory: str) -> None:
        self.call = call
        """Calls a method of the actor: returns its result, or an ``Unreached`` when the
        actor is gone (then nothing is taken)."""
        self.collector = Collector(directory)

    async def receive(self) -> int:
        messages = await self.call("take")
        if not isinstance(messages, list):
            return 0
        await anyio.to_thread.run_sync(self._apply, messages)
        return len(messages)

    def _apply(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            self.collector.apply(message)

    async def aclose(self) -> None:
        return None
