"""Cut a sweep's tasks into batches: fixed sizes, or shrinking toward the end (``auto``).

``auto`` is trapezoid self-scheduling (Tzen and Ni, 1993): sizes fall linearly from
``ceil(tasks / (2 * groups))`` toward one task, where ``groups`` is how many batches the
executor runs at once. In terms of what is left, each batch takes
``ceil(sqrt(tasks * remaining) / (2 * groups))``, so a sweep of any size makes about
``4 * groups`` batches: few to dispatch (each costs its engine milliseconds), and small
ones at the end, so no worker is left with a long batch when the others are done.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

from saturn_async.exceptions import InputError
from saturn_async.spec.models import Batch, Run
from saturn_async.spec.resolve import resolve_batch
from saturn_async.spec.sweep import Sweep
from saturn_async.supervisor.gpu_devices import sweep_gpus

_RUN_FIELD = re.compile(r"^\$\.runs\[(?P<index>[0-9]+)\](?P<rest>\.cmd|\.remote_output_path|.*)$")
_TASK_FIELDS = {".cmd": ".command", ".remote_output_path": ".name"}


def batch_sizes(tasks: int, batch_size: int | str, groups: int) -> list[int]:
    """Sizes of consecutive batches covering ``tasks`` tasks."""
    sizes = []
    remaining = tasks
    while remaining:
        if batch_size == "auto":
            size = min(remaining, math.ceil(math.sqrt(tasks * remaining) / (2 * max(groups, 1))))
        else:
            assert isinstance(batch_size, int)
            size = min(batch_size, remaining)
        sizes.append(size)
        remaining -= size
    return sizes


def plan_sweep(sweep: Sweep, root: str, nprocs: int, groups: int, source: str) -> SweepPlan:
    """The sweep's batches in the sweep layout, each task writing to ``root/<name>``:
    every one checked now, none held. Each is built again as it is iterated (written to
    the sweep's record, sent, or streamed out by ``saturn run --dry-run``)."""
    plan = SweepPlan(sweep, root, nprocs, groups, source)
    for _ in plan:
        pass  # building a batch checks it (InputError)
    return plan


class SweepPlan:
    """A sweep cut into batches, built one at a time as it is iterated (re-iterable)."""

    def __init__(self, sweep: Sweep, root: str, nprocs: int, groups: int, source: str) -> None:
        self.sweep, self.root, self.nprocs, self.source = sweep, root, nprocs, source
        self.sizes = batch_sizes(len(sweep.tasks), sweep.batch_size, groups)
        self.gpus = sweep_gpus(sweep, source)

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self) -> Iterator[Batch]:
        start = 0
        for size in self.sizes:
            yield self._batch(start, size)
            start += size

    def _batch(self, start: int, size: int) -> Batch:
        sweep, root = self.sweep, self.root
        runs = [
            Run(
                cmd=task.command,
                remote_output_path=f"{root}/{task.name}",
                timeout=task.timeout,
                retries=task.retries,
                env=task.env,
                memory=task.memory,
                gpus_per_run=task.gpus_per_run,
            )
            for task in sweep.tasks[start : start + size]
        ]
        batch = Batch(
            nprocs=min(self.nprocs, size),
            remote_output_path=root,
            runs=runs,
            timeout=sweep.timeout,
            retries=sweep.retries,
            retry_delay=sweep.retry_delay,
            retry_backoff=sweep.retry_backoff,
            retry_delay_max=sweep.retry_delay_max,
            retry_on=sweep.retry_on,
            env=sweep.env,
            memory=sweep.memory,
            layout="sweep",
            working_dir=sweep.working_dir,
            gpus=self.gpus,
            gpus_per_run=sweep.gpus_per_run,
        )
        try:
            return resolve_batch(batch, self.source)
        except InputError as exc:
            raise _in_sweep_terms(exc, start) from exc


def _in_sweep_terms(exc: InputError, start: int) -> InputError:
    """``exc`` about a planned batch's ``$.runs[i]`` (starting at task ``start``), naming
    the sweep file's ``$.tasks[start + i]`` instead."""
    match = _RUN_FIELD.match(exc.field or "")
    if match is None:
        return exc
    rest = _TASK_FIELDS.get(match["rest"], match["rest"])
    field = f"$.tasks[{start + int(match['index'])}]{rest}"
    return InputError(exc.message, source=exc.source, field=field)
