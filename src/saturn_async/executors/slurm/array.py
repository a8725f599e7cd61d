"""A sweep as one Slurm job array: its script, its submission, and following its tasks.

Array task ``i`` runs batch file ``i``. An array task that ends in a failed state
(TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, CANCELLED, PREEMPTED, ...) is reported with that
state, and the tasks of its batch left without a status are given one: failure, with
the state in their ``terminated`` event's ``error``. Slurm may requeue an array task
after NODE_FAIL or preemption (``--requeue``), so those two states count once seen on
two polls in a row: a requeued task is pending again by then.

Nothing here knows the executor interface (executors/slurm/executor.py adapts it).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import anyio
import msgspec

from saturn_async.executors.slurm.batch_files import (
    batch_dir,
    remove_batch_files,
    write_batch_files,
)
from saturn_async.executors.slurm.commands import (
    FAILED_STATES,
    FINAL_STATES,
    TaskState,
    accounting_on,
    live_tasks,
    submit,
    task_states,
)
from saturn_async.executors.slurm.config import SlurmConfig
from saturn_async.executors.slurm.script import ArrayJob, array_script
from saturn_async.spec.models import Batch
from saturn_async.spec.paths import is_remote
from saturn_async.status import without_status
from saturn_async.supervisor.gpu_devices import engine_gpus
from saturn_async.sweep.follow import mark_terminated
from saturn_async.sweep.state import SweepRecord, sweep_dir

REQUEUEABLE = frozenset({"NODE_FAIL", "PREEMPTED"})
# The exit status recorded for a task whose array task ended without giving it one:
# 128 + TERM where Slurm sent TERM first, else 128 + KILL.
_SENT_TERM = frozenset({"CANCELLED", "TIMEOUT", "PREEMPTED", "DEADLINE"})
_TERM_STATUS, _KILL_STATUS = 143, 137


@dataclass(frozen=True)
class BatchOptions:
    """The ``saturn batch`` options of a sweep's array tasks."""

    grace: float
    log_chunk_seconds: float
    submitted: str | None


def saturn_program() -> list[str]:
    """How a node starts the saturn of this client: the same Python, as a module."""
    return [sys.executable, "-m", "saturn_async"]


def sweep_script(
    config: SlurmConfig, record: SweepRecord, batches: list[Batch], options: BatchOptions
) -> str:
    """The sbatch script that runs ``batches`` (written to the batch directory)."""
    directory = batch_dir(config.batch_files, record.name, record.created)
    flags = [
        "-q",
        "--failed-runs-exit-zero",
        "--requeue-on-term",
        f"--grace={options.grace:g}",
        f"--log-chunk-minutes={options.log_chunk_seconds / 60:g}",
    ]
    if options.submitted is not None:
        flags.append(f"--submitted={options.submitted}")
    job = ArrayJob(
        name=f"saturn-{record.name}",
        batch_dir=directory,
        count=len(batches),
        cpus_per_task=max(b.nprocs or 1 for b in batches),
        program=saturn_program(),
        batch_options=flags,
        partition=config.partition,
        account=config.account,
        time_limit=config.time_limit,
        max_concurrent=config.max_concurrent,
        output=None if is_remote(directory) else f"{directory}/slurm-%A_%a.out",
        sbatch_args=config.sbatch_args,
        # Slurm sets CUDA_VISIBLE_DEVICES to the task's share: the batch's pool (`all`).
        gpus_per_task=max(engine_gpus(b) for b in batches),
    )
    return array_script(job)


async def submit_sweep(
    config: SlurmConfig, record: SweepRecord, batches: list[Batch], options: BatchOptions
) -> str:
    """Write the batch files, then submit the array; returns its job id. Refused, the
    batch directory written here is removed again."""
    script = sweep_script(config, record, batches, options)
    directory = batch_dir(config.batch_files, record.name, record.created)
    await write_batch_files(directory, batches)
    try:
        return await submit(script, source=record.source)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await remove_batch_files(directory)
        raise


@dataclass
class ArrayFollower:
    """Follows the array job ``job_id`` of ``record``'s sweep."""

    record: SweepRecord
    job_id: str
    ended: dict[int, TaskState] = field(default_factory=dict)
    """Array tasks seen in a final state, by index."""
    _accounting: bool | None = None
    _suspect: dict[int, str] = field(default_factory=dict)
    """Array tasks seen once in a state Slurm may requeue them from."""

    async def poll(self) -> tuple[int, list[str]]:
        """The array tasks still pending or running, and one line per failed one.
        Gives the tasks that newly failed array tasks left without status theirs."""
        source = self.record.source
        live = await live_tasks(self.job_id, source=source)
        if len(self.ended) + live < self.record.batches:
            if self._accounting is None:
                self._accounting = await accounting_on(source=source)
            states = await task_states(self.job_id, accounting=self._accounting, source=source)
            for index, state in sorted(states.items()):
                if index not in self.ended and self._final(index, state):
                    self.ended[index] = state
                    if state.state in FAILED_STATES:
                        await self._mark_lost(index, state)
        return live, [self.describe(i, s) for i, s in self.ended.items() if s.state != "COMPLETED"]

    def _final(self, index: int, state: TaskState) -> bool:
        if state.state not in FINAL_STATES:
            self._suspect.pop(index, None)
            return False
        if state.state not in REQUEUEABLE:
            return True
        seen_before = self._suspect.get(index) == state.state
        self._suspect[index] = state.state
        return seen_before

    def describe(self, index: int, state: TaskState) -> str:
        how = f" (exit code {state.exit_code})" if state.state == "FAILED" else ""
        return f"array task {self.job_id}_{index} (batch {index}): {state.state}{how}"

    async def _mark_lost(self, index: int, state: TaskState) -> None:
        path = sweep_dir(self.record.name) / "batches" / f"{index}.json"
        data = await anyio.Path(path).read_bytes()
        batch = msgspec.json.decode(data, type=Batch)
        commands = {r.remote_output_path or "": r.cmd for r in batch.runs}
        left = await without_status(self.record.results_root, list(commands))
        if not left:
            return
        await mark_terminated(
            self.record.results_root,
            left,
            self.record.created,
            commands,
            error=f"{self.describe(index, state)}; the task had no status",
            status=_TERM_STATUS if state.state in _SENT_TERM else _KILL_STATUS,
        )
