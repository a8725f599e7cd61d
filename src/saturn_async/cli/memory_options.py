"""``--memory`` and ``--memory-cap``: the default memory cap of runs and how caps are
enforced (``saturn batch``; the daemon has them as settings too)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from saturn_async.spec.memory import memory_bytes
from saturn_async.supervisor.memory_caps import CAP_MODES, CapMode, MemoryCaps

MEMORY_HELP = (
    "Cap each run's memory at SIZE (4G; bytes, or with K, M, G, T) where neither it nor "
    "its batch sets memory. A run over its cap is killed: status 137, an oom event."
)
CAP_HELP = (
    "Without cgroup access (not root, nothing delegated): enforce (refuse to start, exit "
    "2) or best-effort (RLIMIT_AS per process: weaker) [default: enforce]."
)


def memory_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--memory-cap", type=click.Choice(CAP_MODES), help=CAP_HELP)(func)
    # A string, read by memory_bytes: a bad size is one line naming the flag (exit 2).
    return click.option("--memory", metavar="SIZE", help=MEMORY_HELP)(func)


def memory_caps(
    memory: str | None, mode: str | None, report: Callable[[str], None] | None = None
) -> MemoryCaps:
    """The caps of ``--memory`` and ``--memory-cap`` (InputError naming a bad one)."""
    default = None if memory is None else memory_bytes(memory, source="--memory")
    cap_mode: CapMode = "best-effort" if mode == "best-effort" else "enforce"
    return MemoryCaps(default, cap_mode, report)
