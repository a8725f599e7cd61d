"""The sweep's detached Ray actor: it owns the batch tasks, so they outlive ``saturn run``.

``saturn run`` creates the actor ``saturn-<name>-<created>`` (namespace ``saturn_async``),
which submits one task per batch and keeps their object refs; ``collect`` and
``terminate`` find it again by name. Its flag is the sweep's stop signal: every batch
asks it when it starts (which also tells it that the batch started), and ``terminate``
sets the flag and cancels the batches that have not started. Ray runs a batch again
(``max_retries`` times) when its worker dies; the actor sees the same task id start
twice, and the rerun skips the tasks that have a status.
"""

from __future__ import annotations

from typing import Any

import ray
import ray.exceptions

from saturn_async.executors.jobs import WorkerJob, WorkerSummary
from saturn_async.executors.worker import run_batches
from saturn_async.storage.queue import puts_finish_marker
from saturn_async.sweep.state import SweepRecord


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
