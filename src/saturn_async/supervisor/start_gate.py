"""What a run waits for after its slot, before it starts: the machine's memory and load
(``load_admission``), then its GPUs (``gpus``). The supervisor and the daemon pass each
run through it; without ``--gpus``, ``--memfree`` and ``--load`` there is no gate."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from saturn_async.exceptions import InputError
from saturn_async.spec.models import Batch, Run
from saturn_async.supervisor.gpu_devices import (
    DEVICE_VARIABLES,
    check_gpu_requests,
    gpu_devices,
    gpus_per_run,
    pool_spec,
)
from saturn_async.supervisor.gpus import GpuPool, process_gpus
from saturn_async.supervisor.load_admission import LoadAdmission


@dataclass(frozen=True, slots=True)
class Ticket:
    """A run's pass: the devices it holds until it has its final status."""

    devices: tuple[str, ...]
    gpu_env: dict[str, str]
    """The device variables for the run (empty without a pool)."""


class StartGate:
    def __init__(self, pool: GpuPool | None, admission: LoadAdmission | None) -> None:
        self.pool = pool
        self.admission = admission

    async def enter(self, batch: Batch, run: Run, stopped: Callable[[], bool]) -> Ticket | None:
        """Wait until ``run`` may start and take its devices; None when ``stopped()``
        turns true first. InputError when the run asks for more GPUs than the pool has
        (``saturn batch`` checks that before anything starts; the daemon's pool may have
        shrunk since a batch was queued)."""
        if self.admission is not None and not await self.admission.wait(stopped):
            return None
        if self.pool is None:
            return Ticket((), {})
        count = gpus_per_run(batch, run.gpus_per_run, self.pool.size)
        if count > self.pool.size:
            raise InputError(f"asks for {count} GPUs; the pool has {self.pool.size}")
        devices = await self.pool.acquire(count, stopped)
        if devices is None:
            return None
        value = ",".join(devices)
        return Ticket(devices, dict.fromkeys(DEVICE_VARIABLES, value))

    def leave(self, ticket: Ticket) -> None:
        if self.pool is not None:
            self.pool.release(ticket.devices)


def start_gate(
    devices: tuple[str, ...] | None,
    memfree: int | None,
    load: float | None,
    report: Callable[[str], None],
) -> StartGate | None:
    """The gate of these settings; None without any (nothing on the hot path)."""
    if devices is None and memfree is None and load is None:
        return None
    admission = None
    if memfree is not None or load is not None:
        admission = LoadAdmission(memfree, load, report)
    return StartGate(process_gpus(devices) if devices else None, admission)


def batches_gate(
    named: Sequence[tuple[str, Batch]],
    devices: tuple[str, ...] | None,
    memfree: int | None,
    load: float | None,
    report: Callable[[str], None],
) -> StartGate | None:
    """The gate of a supervisor's batches (each with its source): the pool of
    ``devices`` (``--gpus``), else of the batches' ``gpus``; every run's
    ``gpus_per_run`` is checked against it first (InputError: nothing starts)."""
    pool_source = "--gpus"
    if devices is None and (given := pool_spec(named)) is not None:
        pool_source = f"{given[0]}: $.gpus"
        devices = gpu_devices(given[1], source=given[0], field="$.gpus")
    check_gpu_requests(named, len(devices or ()), pool_source)
    return start_gate(devices, memfree, load, report)
