"""Per-batch halts (``halt:``, ``saturn submit --halt``): a batch whose halt goes off
has its queued runs cancelled (and, with ``now``, its running ones stopped); other
batches go on. The policy and its counting are ``supervisor/halt.py``."""

from __future__ import annotations

from saturn_async.daemon.journal import Cancel
from saturn_async.daemon.spooling import Spooling
from saturn_async.daemon.state import BatchState
from saturn_async.spec.halt import parse_halt
from saturn_async.supervisor.halt import Halt


class Halting(Spooling):
    def _halt_of(self, batch: BatchState) -> Halt | None:
        """The halt of a batch submitted with one (``halt:``, ``submit --halt``)."""
        if batch.batch.halt is None:
            return None
        halt = self._halts.get(batch.id)
        if halt is None:
            policy = parse_halt(batch.batch.halt, source=batch.source, field="$.halt")
            if policy is None:
                return None
            halt = self._halts[batch.id] = Halt(policy, batch.total, failed=batch.failed)
            if halt.failed >= halt.threshold:  # it went off before a restart: runs it
                halt.trigger = f"a run of {batch.id} before the restart"  # stopped were lost
                self._halted(batch, halt)
        return halt

    def _halted(self, batch: BatchState, halt: Halt) -> None:
        """A batch's halt went off: its queued runs are cancelled (``now`` has stopped
        its running ones); other batches go on."""
        self.logbook("warning", "halted", f"{batch.id}: {halt.describe()}", batch=batch.id)
        if batch.id in self.state.batches:
            self._record(Cancel(batch=batch.id))
        self._notify()
