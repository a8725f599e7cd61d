"""A halt policy at work over a set of runs: it counts their failures and, once they
reach its threshold, says so, stops what runs (``now``) and lets nothing new start.

The decision is pure (counts in, a verdict out); the supervisor, the daemon and the
client following a sweep each act on it. The policy itself is ``spec/halt.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from saturn_async.exceptions import InputError
from saturn_async.spec.halt import HaltPolicy, parse_halt
from saturn_async.spec.models import Batch


class Haltable(Protocol):
    """A running run that a ``now`` halt stops (:class:`RunLifecycle`)."""

    def stop_for_halt(self, trigger: str) -> None: ...


class Halt:
    """One policy over ``total`` runs (a batch, every batch of a ``saturn batch``, a
    sweep). ``failed``: failures counted before (the daemon's, after a restart)."""

    def __init__(self, policy: HaltPolicy, total: int, failed: int = 0) -> None:
        self.policy = policy
        self.threshold = policy.threshold(total)
        self.failed = failed
        self.trigger: str | None = None
        """The run whose failure set the halt off (its output path), once one did."""
        self.trigger_status = 0
        self.running: set[Haltable] = set()
        """The runs in flight under this policy: what ``now`` stops."""

    @property
    def halted(self) -> bool:
        return self.trigger is not None

    def run_ended(self, location: str, status: int, halted: bool = False) -> bool:
        """Count a run's final status; True when its failure sets the halt off. Runs the
        halt itself stopped (``halted``) are not counted."""
        if status == 0 or halted or self.trigger is not None:
            return False
        self.failed += 1
        if self.failed < self.threshold:
            return False
        self.trigger = location
        self.trigger_status = status
        if self.policy.when == "now":
            for run in list(self.running):
                run.stop_for_halt(location)
        return True

    def describe(self) -> str:
        """The line saying what set the halt off, and what it does now."""
        stops = (
            "stopping the running runs"
            if self.policy.when == "now"
            else "letting the running runs finish"
        )
        code = f" (exit {self.trigger_status})" if self.trigger_status else ""
        return (
            f"halt ({self.policy}): {self.trigger} failed{code}, failure "
            f"{self.failed} of the {self.threshold} that halt; starting no new runs, {stops}"
        )


def halts_for(batches: Iterable[Batch], policy: HaltPolicy | None) -> dict[int, Halt]:
    """The halt of each batch, by ``id(batch)``: ``policy`` (``--halt``) over all of
    them together when given, else each batch's own ``halt:`` over its runs. Empty when
    none halts (the supervisor's fast path)."""
    batches = list(batches)
    if policy is not None:
        shared = Halt(policy, sum(len(b.runs) for b in batches))
        return {id(b): shared for b in batches}
    halts = {}
    for batch in batches:
        own = parse_halt(batch.halt, source="halt") if batch.halt is not None else None
        if own is not None:
            halts[id(batch)] = Halt(own, len(batch.runs))
    return halts


def sweep_halt_policy(
    flag: HaltPolicy | None, field: str | None, source: str, *, detach: bool
) -> HaltPolicy | None:
    """The halt of a sweep, which ``saturn run`` applies as it follows the tasks
    (``--halt``, else the file's ``halt:``): when it goes off, the sweep is terminated on
    its executor. ``soon`` is refused: an executor can stop its batches, not keep them
    running while they start nothing new."""
    policy = flag or (parse_halt(field, source=source, field="$.halt") if field else None)
    if policy is None:
        return None
    where = "--halt" if flag is not None else source
    if detach:
        raise InputError(
            "is applied by saturn run as it follows the sweep: not with --detach", source=where
        )
    if policy.when == "soon":
        raise InputError(
            f"{policy}: saturn run halts now only (executors stop whole batches; soon would "
            "need them to stop starting runs); use now,... or saturn batch --halt soon,...",
            source=where,
        )
    return policy
