"""``--gpus``, ``--memfree`` and ``--load``: what a run waits for before it starts
(``saturn batch`` and ``saturn daemon``), and the gate they make."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click

from saturn_async.cli.options import FiniteRange
from saturn_async.spec.input_file import parse_size
from saturn_async.spec.models import Batch
from saturn_async.supervisor.gpu_devices import gpu_devices
from saturn_async.supervisor.start_gate import StartGate, batches_gate


def start_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--load",
        type=FiniteRange(min=0, min_open=True),
        help="Start a run only while the 1-minute load average is under N (admission: "
        "running runs are never stopped for it).",
    )(func)
    func = click.option(
        "--memfree",
        metavar="SIZE",
        help="Start a run only while MemAvailable (/proc/meminfo) is at least SIZE (bytes, "
        "or with K, M, G, T: 4G); admission, not a limit.",
    )(func)
    return click.option(
        "--gpus",
        metavar="all|N|LIST",
        help="GPUs to hand to runs: all, a count, or a device list (0,1,2,3; 2, for one). "
        "Each run holds gpus_per_run distinct ones (default 1) in CUDA_VISIBLE_DEVICES, "
        "ROCR_VISIBLE_DEVICES and SATURN_RUN_GPUS; runs that do not fit wait.",
    )(func)


def flag_devices(gpus: str | None) -> tuple[str, ...] | None:
    """``--gpus`` read into devices (InputError naming the flag)."""
    return None if gpus is None else gpu_devices(gpus, source="--gpus")


def flag_size(memfree: str | None) -> int | None:
    """``--memfree`` in bytes (InputError naming the flag: one line, not click's usage)."""
    return None if memfree is None else parse_size(memfree, source="--memfree")


def batch_gate(
    named: Sequence[tuple[str, Batch]],
    gpus: str | None,
    memfree: str | None,
    load: float | None,
    report: Callable[[str], None],
) -> StartGate | None:
    """``saturn batch``'s gate (``start_gate.batches_gate``), from its flags."""
    return batches_gate(named, flag_devices(gpus), flag_size(memfree), load, report)
