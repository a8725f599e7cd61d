"""The async core on a worker: slots, one run's lifecycle, process groups.

The names below are imported on first use, so that the watchdog process (which imports
``saturn_async.supervisor.watchdog``) starts without the rest of the supervisor.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from saturn_async.supervisor.progress import SweepProgress
    from saturn_async.supervisor.supervisor import (
        BatchSummary,
        Supervisor,
        run_batches,
        slot_count,
    )

_LAZY = {
    "SweepProgress": "saturn_async.supervisor.progress",
    "BatchSummary": "saturn_async.supervisor.supervisor",
    "Supervisor": "saturn_async.supervisor.supervisor",
    "run_batches": "saturn_async.supervisor.supervisor",
    "slot_count": "saturn_async.supervisor.supervisor",
}

__all__ = ["BatchSummary", "Supervisor", "SweepProgress", "run_batches", "slot_count"]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'saturn_async.supervisor' has no attribute {name!r}")
