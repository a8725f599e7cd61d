"""What a run used, for its end event: CPU time and peak memory, measured honestly.

From the run's cgroup where it has one (a capped run): the whole process tree's charged
memory at its peak (page cache included) and CPU time, orphans included.

Else from the main process's rusage (``wait4``): CPU time of it and the descendants it
waited for, and the largest peak RSS among them. That peak cannot be told apart from the
supervisor's own size: the run's shell starts as a copy of the supervisor (``vfork``),
and Linux carries the high-water mark of that address space past ``exec`` into the
child's rusage. So the figure counts only when it is above the supervisor's own peak,
which bounds the one carried over (``max_rss_kib``); when it is not, the run stayed at or
under it and only that bound is known (``max_rss_at_most_kib``).
"""

from __future__ import annotations

import resource
from typing import NamedTuple

from saturn_async.supervisor.cgroups import TreeUsage


class Usage(NamedTuple):
    cpu_user_seconds: float
    cpu_system_seconds: float
    max_rss_kib: int | None
    """The peak, when measured."""
    max_rss_at_most_kib: int | None
    """When the peak is not known: a bound on it."""


def measured(rusage: resource.struct_rusage, tree: TreeUsage | None) -> Usage:
    """A run's usage from its cgroup's counts (``tree``) where it has them, else from
    the rusage of its main process."""
    if tree is not None:
        user, system = tree.cpu_seconds or (rusage.ru_utime, rusage.ru_stime)
        if tree.peak_bytes is not None:
            return Usage(user, system, tree.peak_bytes // 1024, None)
    else:
        user, system = rusage.ru_utime, rusage.ru_stime
    carried_bound = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if rusage.ru_maxrss > carried_bound:
        return Usage(user, system, rusage.ru_maxrss, None)
    return Usage(user, system, None, rusage.ru_maxrss)
