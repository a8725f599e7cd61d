"""Memory caps of runs (``memory:`` in files, ``--memory``): how each one is enforced.

A capped run gets its own cgroup (supervisor/cgroups.py), whose limit the kernel
enforces on the run's whole process tree: a run that goes over it is OOM-killed. It
also gets an ``oom_score_adj`` 500 above the supervisor's, so that when the machine
itself runs out of memory the kernel's OOM killer picks runs, not the supervisor.

Without cgroups (not root, and nothing delegated), ``enforce`` (the default) refuses
capped runs, and ``best-effort`` caps each run's shell and every process it starts at
the cap in address space (``ulimit -v``, RLIMIT_AS): weaker, since it counts mappings,
not memory, holds per process, not per tree, and fails allocations (MemoryError, say)
instead of killing. Runs without a cap are not touched.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from saturn_async.exceptions import InputError
from saturn_async.spec.input_file import format_size
from saturn_async.spec.memory import memory_bytes
from saturn_async.spec.models import Batch, Run
from saturn_async.storage.layout import Event, utcnow
from saturn_async.supervisor.cgroups import RunCgroup, SupervisorCgroups, TreeUsage, find_hierarchy

CapMode = Literal["enforce", "best-effort"]
CAP_MODES: tuple[CapMode, ...] = ("enforce", "best-effort")
OOM_STATUS = 137
"""The status of a run its cap killed, as a shell reports SIGKILL."""
_OOM_SCORE_ABOVE = 500


@dataclass(frozen=True, slots=True)
class RunCap:
    """How one attempt of a capped run is held to its cap."""

    limit: int
    prelude: str
    """Shell text the run's shell executes before its command."""
    cgroup: RunCgroup | None
    """None when best-effort stands in for a cgroup."""


class MemoryCaps:
    """A supervisor's memory caps: the default cap, the mode, and its cgroups (looked
    for on the first capped run, or by :meth:`require`)."""

    def __init__(
        self,
        default: int | None = None,
        mode: CapMode = "enforce",
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.default = default
        self.mode = mode
        self.report = report or _to_stderr
        self._probed = False
        self._unavailable: str | None = None
        self._cgroups: SupervisorCgroups | None = None
        self._oom_score_adj: int | None = None
        self._fell_back = False

    def limit_for(self, batch: Batch, run: Run) -> int | None:
        """The run's cap in bytes: its own, else its batch's, else the default."""
        value = run.memory if run.memory is not None else batch.memory
        if value is None:
            return self.default
        return memory_bytes(value, source="memory")  # checked when the batch was read

    def capped(self, batches: Iterable[Batch]) -> bool:
        """Whether any run of ``batches`` has a cap."""
        if self.default is not None:
            return True
        return any(
            b.memory is not None or any(r.memory is not None for r in b.runs) for b in batches
        )

    def unavailable(self) -> str | None:
        """Why cgroups cannot hold runs here, or None when they can."""
        if not self._probed:
            found = find_hierarchy()
            if isinstance(found, str):
                self._unavailable = found
            else:
                self._cgroups = SupervisorCgroups(found, self.report)
            self._probed = True
        return self._unavailable

    def require(self) -> None:
        """At start, when runs are capped: InputError (exit 2) when caps cannot be
        enforced, or with ``best-effort`` one line saying what stands in."""
        reason = self.unavailable()
        if reason is None:
            return
        if self.mode == "enforce":
            raise InputError(
                f"cannot be enforced: {reason} (--memory-cap best-effort caps each run's "
                "address space, RLIMIT_AS, instead)",
                source="memory caps",
            )
        self._fall_back(reason)

    def _fall_back(self, reason: str) -> None:
        if not self._fell_back:
            self._fell_back = True
            self.report(
                f"memory caps cannot be enforced: {reason}; best-effort: each run's address "
                "space is capped instead (RLIMIT_AS)"
            )

    def start(self, limit: int) -> RunCap:
        """How an attempt capped at ``limit`` bytes starts: in a new cgroup, else (with
        ``best-effort``) under RLIMIT_AS. OSError when it cannot be capped."""
        reason = self.unavailable()
        if self._cgroups is not None:
            cgroup = self._cgroups.run_cgroup(limit, self.run_oom_score_adj())
            return RunCap(limit, cgroup.prelude, cgroup)
        assert reason is not None
        if self.mode == "enforce":
            raise OSError(f"memory caps cannot be enforced: {reason}")
        self._fall_back(reason)
        return RunCap(limit, f"ulimit -v {max(limit // 1024, 1)} || exit 127; ", None)

    def run_oom_score_adj(self) -> int:
        """The supervisor's ``oom_score_adj`` plus 500 (at most 1000)."""
        if self._oom_score_adj is None:
            try:
                with open("/proc/self/oom_score_adj") as f:
                    own = int(f.read())
            except (OSError, ValueError):
                own = 0
            self._oom_score_adj = min(1000, own + _OOM_SCORE_ABOVE)
        return self._oom_score_adj

    def close(self) -> None:
        """Remove the supervisor's cgroup directories (after its runs ended)."""
        if self._cgroups is not None:
            self._cgroups.close()


def oom_event(cap: RunCap, tree: TreeUsage, attempt: int) -> Event | None:
    """The ``oom`` event of an attempt whose cgroup counted an OOM kill, else None."""
    if not tree.oom_kills:
        return None
    peak = tree.peak_bytes // 1024 if tree.peak_bytes is not None else None
    return Event(
        type="oom",
        utctimestamp=utcnow(),
        attempt=attempt,
        memory_limit_kib=cap.limit // 1024,
        max_rss_kib=peak,
        error=f"killed by the kernel for going over its memory cap of {format_size(cap.limit)}",
    )


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)
