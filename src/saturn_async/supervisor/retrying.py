"""Retrying a run's failed attempt: which failures retry (``retry_on``) and how long to
wait before each retry (``retry_delay``, ``retry_backoff``, ``retry_delay_max``), jittered
as storage's retries are (``storage.retry.Backoff``). A run's values win over its batch's."""

from __future__ import annotations

import math

from saturn_async.spec.models import Batch, Run
from saturn_async.storage.retry import Backoff


class RetryRule:
    """Made at a run's first failure, so runs that never fail never pay for it."""

    def __init__(self, batch: Batch, run: Run) -> None:
        retry_on = run.retry_on if run.retry_on is not None else batch.retry_on
        self.on = frozenset(retry_on) if retry_on is not None else None
        delay = run.retry_delay if run.retry_delay is not None else batch.retry_delay
        factor = run.retry_backoff if run.retry_backoff is not None else batch.retry_backoff
        cap = run.retry_delay_max if run.retry_delay_max is not None else batch.retry_delay_max
        self._backoff = (
            Backoff(delay, cap if cap is not None else math.inf, factor or 1.0) if delay else None
        )

    def retries(self, status: int) -> bool:
        """Whether a failure with ``status`` is retried (when retries are left)."""
        return self.on is None or status in self.on

    def next_delay(self) -> float:
        """The wait before the next retry, in seconds (to the millisecond; 0: none)."""
        return round(self._backoff.next_delay(), 3) if self._backoff is not None else 0.0
