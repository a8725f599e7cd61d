"""saturn_async: run massively parallel shell-command sweeps, capturing every run's output."""

from saturn_async.exceptions import InputError, SaturnError
from saturn_async.spec import Batch, Run, load_batch_file
from saturn_async.supervisor import BatchSummary, run_batches

__version__ = "0.1.0"

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
