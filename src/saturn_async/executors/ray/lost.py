"""The sweep's actor seen from the client: reached, gone for now, or dead; and the tasks
its death leaves without a status.

The actor owns every batch task, so Ray ends them when it dies (its node lost, killed,
out of memory): the tasks without a status by then never get one. The client gives
each a status as for a Slurm array task lost with its node: failure (exit
:data:`LOST_STATUS`), with a ``terminated`` event naming the actor and Ray's reason.
With local results it first waits while a task's lease is held (its run, or a batch Ray
has not ended yet, is still there and may record an outcome).
A call that Ray answers with ``ActorUnavailableError`` (the actor's node not reached
now: a partition, say) is no news: the actor may answer again, and Ray says
``ActorDiedError`` once it gives it up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import ray
import ray.exceptions

from saturn_async.executors.ray.worker import ray_reason
from saturn_async.spec.paths import is_remote
from saturn_async.status import without_status
from saturn_async.supervisor.lease import lease_held
from saturn_async.sweep.follow import mark_terminated
from saturn_async.sweep.state import SweepRecord, task_commands

LOST_STATUS = 137
"""The exit status recorded for a task lost with the actor (128 + KILL: Ray kills the
workers of a dead owner)."""


@dataclass(frozen=True)
class Unreached:
    """A call the sweep's actor did not answer: ``why``, and whether Ray says it died
    (then its batch tasks died with it) rather than cannot reach it now."""

    why: str
    died: bool


def unreached(name: str, exc: ray.exceptions.RayActorError) -> Unreached:
    """What ``exc``, raised by a call to the actor ``name``, says of it."""
    reason = ray_reason(exc)
    if isinstance(exc, ray.exceptions.ActorUnavailableError):
        return Unreached(f"the sweep's Ray actor {name} cannot be reached now: {reason}", False)
    return Unreached(f"the sweep's Ray actor {name} died: {reason}", True)


def recorded_death(name: str) -> Unreached | None:
    """The death of the actor ``name`` as Ray's actor table keeps it, or None (never
    created on this cluster, or dropped from the table).

    The table is read through ``ray._private.state``: no public call reads dead actors
    without the dashboard. Anything it raises (a Ray that changed it, Ray Client) means
    None, as for an actor Ray does not know."""
    try:
        from ray._private.state import actors

        dead: dict[str, Any] = actors(actor_state_name="DEAD")
        cause = next((a["DeathCause"] for a in dead.values() if a["Name"] == name), None)
        if cause is None:
            return None
        context = cause.WhichOneof("context")
        reason = str(getattr(getattr(cause, context), "error_message", "")) if context else ""
    except Exception:  # a private API: any failure means "not known"
        return None
    return Unreached(f"the sweep's Ray actor {name} died: {reason or 'no reason given'}", True)


def _any_held(locations: list[str]) -> bool:
    return any(lease_held(location) for location in locations)


async def mark_lost(record: SweepRecord, why: str) -> str | None:
    """Give the sweep's tasks without a status theirs (failure, a ``terminated`` event
    saying ``why``); returns one line saying what became of them. None, and nothing
    marked, while a live attempt holds the lease of one of them."""
    root = record.results_root
    lost = await without_status(root, record.tasks)
    if not is_remote(root) and await anyio.to_thread.run_sync(_any_held, lost):
        return None
    commands = await anyio.to_thread.run_sync(task_commands, record.name) if lost else {}
    await mark_terminated(
        root,
        lost,
        record.created,
        commands,
        error=f"{why}; the task had no status",
        status=LOST_STATUS,
    )
    if not lost:
        return why
    return (
        f"{why}; its {len(lost)} tasks without a status are lost: each now has status "
        f"failure (exit {LOST_STATUS}) and a terminated event saying so (first: {lost[0]})"
    )
