"""``saturn status --usage``: peak memory and CPU per run, summarized, and the nprocs
they suggest for a machine.

The suggestion reasons as Saturn Cloud's docs do for ``nprocs``: a run that takes about
1 GB and one CPU on a machine of 96 cores and 192 GB allows 96 at once by CPU; a run of
8 GB allows fewer than 192 / 8 = 24 by memory. Here the memory side divides the machine's
memory by the largest peak (every slot may hold the biggest run at once) and the CPU side
divides its cores by the CPUs a run keeps busy (CPU seconds over wall seconds, median);
nprocs is the smaller.
"""

from __future__ import annotations

import math
import os
import re
import statistics
from collections.abc import Sequence

import msgspec

from saturn_async.exceptions import InputError
from saturn_async.report.data import Usage
from saturn_async.spec.input_file import format_size, parse_size

_MACHINE = re.compile(r"^\s*(?P<cores>[0-9]+)\s*c\s*,\s*(?P<memory>[^,]+)$", re.IGNORECASE)


class Spread(msgspec.Struct):
    median: float
    p95: float
    max: float


class Machine(msgspec.Struct):
    cores: int
    memory_bytes: int


class Suggestion(msgspec.Struct):
    nprocs: int
    by_memory: int
    by_cpu: int
    machine: Machine
    reason: str


class UsageSummary(msgspec.Struct):
    runs: int
    """Runs with a recorded usage (finished ones)."""
    peak_memory_kib: Spread | None
    cpu_seconds: Spread | None
    cpus_per_run: Spread | None
    """CPU seconds over wall seconds: the CPUs a run keeps busy."""
    bounded_peaks: int
    """Runs whose peak is only a bound (under the supervisor's own size, uncapped)."""
    suggestion: Suggestion | None


def parse_machine(text: str) -> Machine:
    """``96c,192G``: cores and memory (InputError naming ``--for-machine``)."""
    match = _MACHINE.match(text)
    if match is None or int(match["cores"]) == 0:
        raise InputError(f"{text!r} is not CORESc,MEMORY (96c,192G, say)", source="--for-machine")
    return Machine(int(match["cores"]), parse_size(match["memory"], source="--for-machine"))


def this_machine() -> Machine:
    """This machine's CPUs and memory (MemTotal)."""
    total = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    total = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        pass
    return Machine(os.cpu_count() or 1, total)


def summarize(usage: Sequence[Usage], machine: Machine) -> UsageSummary:
    peaks = [u.max_rss_kib for u in usage]
    cpus = [u.cpu_seconds for u in usage]
    busy = [u.cpu_seconds / u.wall_seconds for u in usage if u.wall_seconds > 0]
    summary = UsageSummary(
        runs=len(usage),
        peak_memory_kib=_spread(peaks),
        cpu_seconds=_spread(cpus),
        cpus_per_run=_spread(busy),
        bounded_peaks=sum(u.bounded for u in usage),
        suggestion=None,
    )
    if peaks:
        summary.suggestion = suggest(max(peaks), statistics.median(busy) if busy else 1.0, machine)
    return summary


def suggest(peak_kib: int, cpus_per_run: float, machine: Machine) -> Suggestion:
    """nprocs for ``machine``: the smaller of what its memory and its cores allow."""
    by_memory = machine.memory_bytes // max(peak_kib * 1024, 1)
    by_cpu = math.floor(machine.cores / max(cpus_per_run, 0.01))
    nprocs = max(1, min(by_memory, by_cpu))
    limit = "memory" if by_memory <= by_cpu else "CPU"
    memory, peak = format_size(machine.memory_bytes), format_size(peak_kib * 1024)
    reason = (
        f"memory allows {by_memory} ({memory} / {peak}, the largest peak), CPU {by_cpu} "
        f"({machine.cores} cores / {cpus_per_run:.2f} CPUs a run keeps busy, median): "
        f"{limit} limits"
    )
    return Suggestion(nprocs, by_memory, by_cpu, machine, reason)


def summary_lines(summary: UsageSummary) -> list[str]:
    """The summary for people, a few lines."""
    if summary.peak_memory_kib is None or summary.cpu_seconds is None:
        return ["usage: no finished run recorded its usage"]
    peak, cpu = summary.peak_memory_kib, summary.cpu_seconds
    lines = [
        f"usage of {summary.runs} runs (median, p95, max):",
        f"  peak memory  {format_size(peak.median * 1024)}, {format_size(peak.p95 * 1024)}, "
        f"{format_size(peak.max * 1024)}",
        f"  CPU seconds  {cpu.median:.2f}, {cpu.p95:.2f}, {cpu.max:.2f}",
    ]
    if summary.bounded_peaks:
        lines.append(
            f"  {summary.bounded_peaks} peaks are bounds: uncapped runs below the "
            "supervisor's own size (give them memory: to measure them in a cgroup)"
        )
    if summary.suggestion is not None:
        s = summary.suggestion
        lines.append(
            f"suggested nprocs for {s.machine.cores}c,{format_size(s.machine.memory_bytes)}: "
            f"{s.nprocs} ({s.reason})"
        )
    return lines


def _spread(values: Sequence[float]) -> Spread | None:
    if not values:
        return None
    ordered = sorted(values)
    p95 = ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)]
    return Spread(float(statistics.median(ordered)), float(p95), float(ordered[-1]))
