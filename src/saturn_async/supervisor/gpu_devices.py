"""Which GPUs a process hands to its runs: ``--gpus all|N|0,1,2,3`` (or a file's ``gpus``)
read into a list of device names, and each run's share checked against it.

``all`` is the devices saturn itself may use: ``$CUDA_VISIBLE_DEVICES`` when set (Ray,
Slurm and container runtimes set it for the process they start; read as CUDA reads it,
up to its first item that is no device, so ``-1`` is none), else those
``nvidia-smi -L`` lists, else one per entry of ``/proc/driver/nvidia/gpus``. ``N`` is
the first N of ``$CUDA_VISIBLE_DEVICES`` when set, else devices ``0`` to ``N-1``
(unchecked, like a list). A list (``0,1,2,3``; ``2,`` for one device; ``GPU-<uuid>``
and ``MIG-<uuid>`` work) is taken as given. See docs/cli.md, "GPUs".
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence

from saturn_async.exceptions import InputError
from saturn_async.spec.models import Batch, GpuSpec
from saturn_async.spec.sweep import Sweep

DEVICE_VARIABLES = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "SATURN_RUN_GPUS")
"""Each run's devices, comma-separated, in each of these (empty for a run of 0 GPUs)."""
_NVIDIA_PROC = "/proc/driver/nvidia/gpus"
_NVIDIA_SMI_LINE = re.compile(r"^GPU (\d+):", re.MULTILINE)
_DEVICE = re.compile(r"^(?:\d+|(?:GPU|MIG)-[A-Za-z0-9_.:/-]+)$")
"""An index, or a UUID as nvidia-smi -L and rocm-smi print them."""


def gpu_devices(spec: GpuSpec, *, source: str, field: str | None = None) -> tuple[str, ...]:
    """The devices ``spec`` names (see the module docstring); InputError naming
    ``source`` (and ``field``) when it names none or is not a GPU list."""
    if isinstance(spec, int):
        return _first(spec, source, field)
    if isinstance(spec, list):
        return _listed([str(item) for item in spec], source, field)
    text = spec.strip()
    if text == "all":
        devices = detected_gpus()
        if not devices:
            raise InputError(
                "no GPU found for 'all' (no $CUDA_VISIBLE_DEVICES, nvidia-smi -L lists none, "
                f"nothing in {_NVIDIA_PROC}); give a device list: 0,1,2,3",
                source=source,
                field=field,
            )
        return devices
    if text.isdecimal():
        return _first(int(text), source, field)
    items = text.split(",")
    if len(items) > 1 and items[-1] == "":
        items.pop()  # "2," is the one device 2 (a bare 2 is a count)
    return _listed(items, source, field)


def pool_size(spec: GpuSpec, *, source: str, field: str | None = None) -> int | None:
    """How many devices ``spec`` names, checked as :func:`gpu_devices` checks it, without
    looking at this machine: None for ``all`` (the machine that runs the batch knows)."""
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdecimal()):
        count = int(spec)
        if count < 1:
            raise InputError(f"{count} is not a GPU count (at least 1)", source=source, field=field)
        return count
    if isinstance(spec, str) and spec.strip() == "all":
        return None
    return len(gpu_devices(spec, source=source, field=field))


def sweep_gpus(sweep: Sweep, source: str) -> GpuSpec | None:
    """A sweep's workers' GPU pool: its ``gpus``, else ``all`` when a task asks for GPUs
    (the engine gives each batch its share: docs/executors.md, "GPUs"). A task asking
    for more than a pool of known size is an InputError."""
    asks = sweep.gpus_per_run is not None or any(t.gpus_per_run for t in sweep.tasks)
    if sweep.gpus is None:
        return "all" if asks else None
    size = pool_size(sweep.gpus, source=source, field="$.gpus")
    if size is None:
        return sweep.gpus
    wants = [("$.gpus_per_run", sweep.gpus_per_run or 1)]
    wants += [
        (f"$.tasks[{i}].gpus_per_run", t.gpus_per_run or 0) for i, t in enumerate(sweep.tasks)
    ]
    for field, want in wants:
        if want > size:
            raise InputError(
                f"asks for {want} GPUs per run; the pool ($.gpus) has {size}",
                source=source,
                field=field,
            )
    return sweep.gpus


def engine_gpus(batch: Batch) -> int:
    """The GPUs an engine (Ray, Kubernetes, Slurm) should give the process that runs
    ``batch``: its pool's size when the batch names one, else enough for ``nprocs`` runs
    of its largest ``gpus_per_run``; 0 for a batch that asks for none."""
    if batch.gpus is None:
        return 0
    size = pool_size(batch.gpus, source="batch", field="$.gpus")
    if size is not None:
        return size
    widest = max(gpus_per_run(batch, run.gpus_per_run, 1) for run in batch.runs)
    return min(batch.nprocs or 1, len(batch.runs)) * widest


def detected_gpus() -> tuple[str, ...]:
    """The devices ``all`` means here (possibly none)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:  # as CUDA reads it: up to the first item that is no device
        items = [item.strip() for item in visible.split(",")]
        invalid = [i for i, item in enumerate(items) if not _DEVICE.match(item)]
        return tuple(items[: invalid[0]] if invalid else items)
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            listing = subprocess.run(
                [smi, "-L"], capture_output=True, text=True, timeout=30, check=False
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            listing = ""
        indices = _NVIDIA_SMI_LINE.findall(listing)
        if indices:
            return tuple(indices)
    try:
        return tuple(str(index) for index in range(len(os.listdir(_NVIDIA_PROC))))
    except OSError:
        return ()


def _first(count: int, source: str, field: str | None) -> tuple[str, ...]:
    if count < 1:
        raise InputError(f"{count} is not a GPU count (at least 1)", source=source, field=field)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return tuple(str(index) for index in range(count))
    devices = detected_gpus()
    if len(devices) < count:
        raise InputError(
            f"{count} GPUs, but $CUDA_VISIBLE_DEVICES lets this process see {len(devices)}",
            source=source,
            field=field,
        )
    return devices[:count]


def _listed(items: Sequence[str], source: str, field: str | None) -> tuple[str, ...]:
    devices = tuple(item.strip() for item in items)
    for device in devices:
        if not _DEVICE.match(device):
            raise InputError(
                f"{device!r} is not a GPU (give all, a count, or a device list: 0,1,2,3 "
                "or GPU-<uuid>,...)",
                source=source,
                field=field,
            )
    if len(set(devices)) != len(devices):
        raise InputError(f"{','.join(devices)!r} names a device twice", source=source, field=field)
    return devices


def pool_spec(batches: Sequence[tuple[str, Batch]]) -> tuple[str, GpuSpec] | None:
    """The GPU pool the batch files ask for, with the file that names it: every file
    that gives ``gpus`` must give the same (the pool is the machine's, like its CPUs)."""
    found: tuple[str, GpuSpec] | None = None
    for source, batch in batches:
        if batch.gpus is None:
            continue
        if found is None:
            found = (source, batch.gpus)
        elif batch.gpus != found[1]:
            raise InputError(
                f"{batch.gpus!r} differs from the gpus of {found[0]} ({found[1]!r}); "
                "one process has one GPU pool (or give --gpus)",
                source=source,
                field="$.gpus",
            )
    return found


def check_gpu_requests(
    batches: Sequence[tuple[str, Batch]], pool: int, pool_source: str | None
) -> None:
    """InputError for the first run asking for more GPUs than the pool has (``pool`` 0:
    no pool; ``pool_source`` names where it was given)."""
    where = f"the pool ({pool_source}) has {pool}" if pool else "no GPU pool is given (--gpus)"
    for source, batch in batches:
        default = gpus_per_run(batch, None, pool)
        if default > pool:
            raise InputError(
                f"asks for {default} GPUs per run; {where}", source=source, field="$.gpus_per_run"
            )
        for index, run in enumerate(batch.runs):
            if run.gpus_per_run is not None and run.gpus_per_run > pool:
                raise InputError(
                    f"asks for {run.gpus_per_run} GPUs; {where}",
                    source=source,
                    field=f"$.runs[{index}].gpus_per_run",
                )


def gpus_per_run(batch: Batch, own: int | None, pool: int) -> int:
    """A run's GPUs: its own ``gpus_per_run``, else its batch's, else 1 with a pool."""
    if own is not None:
        return own
    if batch.gpus_per_run is not None:
        return batch.gpus_per_run
    return 1 if pool else 0
