"""The async core on a worker: slots, one run's lifecycle, process groups."""

from saturn_async.supervisor.progress import SweepProgress
from saturn_async.supervisor.supervisor import BatchSummary, Supervisor, run_batches, slot_count

__all__ = ["BatchSummary", "Supervisor", "SweepProgress", "run_batches", "slot_count"]
