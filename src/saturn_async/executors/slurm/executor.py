"""``SlurmExecutor``: the async executor interface (executors/abc.py) over the Slurm core
of this package, awaited in the caller's loop.

``saturn run`` writes the batch files under ``batch_files`` and submits one array job
(sbatch ``--parsable``), whose id goes in the sweep's record. ``collect`` follows the
array with squeue (and sacct or scontrol for the states of ended array tasks);
``terminate`` runs scancel on it. Slurm is reached only through its commands on PATH,
which read ``SLURM_CONF`` like any Slurm client.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable, Iterator
from typing import Any

from saturn_async.exceptions import ExecutorError, InputError
from saturn_async.executors.abc import Executor, Outstanding
from saturn_async.executors.jobs import WorkerJob
from saturn_async.executors.slurm.array import (
    ArrayFollower,
    BatchOptions,
    submit_sweep,
    sweep_script,
)
from saturn_async.executors.slurm.batch_files import check_visible
from saturn_async.executors.slurm.commands import cancel, node_hosts, partition_cpus
from saturn_async.executors.slurm.config import SlurmConfig
from saturn_async.spec.models import Batch
from saturn_async.spec.paths import is_remote
from saturn_async.sweep.state import SweepRecord

COMMANDS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
JOB_ID = "slurm_job"
"""The key of the array's job id in the sweep record's ``handle``."""
_STATUS_INTERVAL = 2.0
"""squeue is asked at most this often (slurmctld is shared)."""
UNREACHABLE = 300.0
"""Seconds Slurm may fail to answer (slurmctld restarting, say) before following the
array fails; meanwhile the last answer stands."""


class SlurmExecutor(Executor):
    Config = SlurmConfig

    def __init__(self, config: Any, record: SweepRecord) -> None:
        super().__init__(config, record)
        job_id = record.handle.get(JOB_ID)
        self._follower = ArrayFollower(record, job_id) if job_id else None
        self._status: tuple[float, Outstanding] | None = None

    @property
    def detaches(self) -> bool:
        return True

    def check(self) -> None:
        source = self.record.source
        missing = [name for name in COMMANDS if shutil.which(name) is None]
        if missing:
            raise InputError(
                f"Slurm is not installed here: {', '.join(missing)} not on PATH",
                source=source,
                field="$.executor.class_spec",
            )
        if self.record.results.get("class_spec") in ("Dask", "Ray"):
            raise InputError(
                "SlurmExecutor's array tasks write results themselves: use LocalDir on a "
                "shared filesystem, or S3",
                source=source,
                field="$.results.class_spec",
            )
        files = self.config.batch_files
        if not is_remote(files) and not os.path.isabs(files):
            raise InputError(
                "must be an absolute path on a filesystem every node shares, or s3://",
                source=source,
                field="$.executor.batch_files",
            )

    async def slot_groups(self, nprocs: int) -> int:
        """Also the first call that may ask Slurm, before anything is written: refuses
        node-local paths when other machines are nodes."""
        source = self.record.source
        hosts = await node_hosts(self.config.partition, source=source)
        others = hosts - {os.uname().nodename, os.uname().nodename.split(".")[0]}
        check_visible(
            self.config.batch_files, others, source=source, field="$.executor.batch_files"
        )
        check_visible(self.record.results_root, others, source=source, field="$.results")
        if self.config.max_concurrent is not None:
            return self.config.max_concurrent  # type: ignore[no-any-return]
        cpus = await partition_cpus(self.config.partition, source=source)
        return max(1, cpus // nprocs)

    def describe(self, job: WorkerJob, batches: Iterable[Batch]) -> Iterator[str]:
        yield sweep_script(self.config, self.record, list(batches), _options(job))

    async def run(self, job: WorkerJob, batches: Iterable[Batch]) -> None:
        held = list(batches)
        job_id = await submit_sweep(self.config, self.record, held, _options(job))
        self.record.handle[JOB_ID] = job_id
        self._follower = ArrayFollower(self.record, job_id)

    async def outstanding(self) -> Outstanding:
        if self._follower is None:
            return Outstanding(0, ["the sweep's record holds no Slurm job id"])
        now = time.monotonic()
        if self._status is None or now - self._status[0] >= _STATUS_INTERVAL:
            try:
                live, errors = await self._follower.poll()
            except ExecutorError:
                if self._status is None or now - self._status[0] > UNREACHABLE:
                    raise
                return self._status[1]
            self._status = (now, Outstanding(live, errors))
        return self._status[1]

    async def terminate(self) -> None:
        if self._follower is not None:
            grace = float(self.record.handle.get("grace", 10.0))
            await cancel(self._follower.job_id, grace=grace, source=self.record.source)
        self._status = None


def _options(job: WorkerJob) -> BatchOptions:
    return BatchOptions(job.grace, job.log_chunk_seconds, job.submitted)
