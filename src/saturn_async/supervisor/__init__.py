"""The async core on a worker: slots, one run's lifecycle, process groups."""

from saturn_async.supervisor.progress import SweepProgress
from saturn_async.supervisor.supervisor import BatchSummary, Supervisor, run_batches

__all__ = ["BatchSummary", "Supervisor", "SweepProgress", "run_batches"]
