"""saturn_async: run massively parallel shell-command sweeps, capturing every run's output.

The names below are imported on first use, so that ``saturn`` commands which do not need
them start faster.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from saturn_async.exceptions import InputError, SaturnError

if TYPE_CHECKING:
    from saturn_async.spec import Batch, Run, load_batch_file
    from saturn_async.supervisor import BatchSummary, run_batches

__version__ = "0.1.0"

_LAZY = {
    "Batch": "saturn_async.spec",
    "Run": "saturn_async.spec",
    "load_batch_file": "saturn_async.spec",
    "BatchSummary": "saturn_async.supervisor",
    "run_batches": "saturn_async.supervisor",
}

__all__ = [
    "Batch",
    "BatchSummary",
    "InputError",
    "Run",
    "SaturnError",
    "__version__",
    "load_batch_file",
    "run_batches",
]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'saturn_async' has no attribute {name!r}")
