"""The daemon's ``gpus``, ``memfree`` and ``load`` settings: its start gate, and the
check that a submitted batch's runs fit its GPU pool.

They are fixed for the daemon's life (SIGHUP does not change them). A queued batch
whose runs no longer fit, after a restart with fewer GPUs, is quarantined when its run
is due (``StartGate.enter`` refuses it)."""

from __future__ import annotations

from collections.abc import Callable

from saturn_async.daemon.config import DaemonConfig
from saturn_async.daemon.protocol import SubmittedBatch
from saturn_async.spec.input_file import parse_size
from saturn_async.supervisor.gpu_devices import check_gpu_requests, gpu_devices
from saturn_async.supervisor.start_gate import StartGate, start_gate


def daemon_gate(
    config: DaemonConfig,
    config_path: str | None,
    flags: dict[str, object],
    report: Callable[[str], None],
) -> StartGate | None:
    """The gate of ``config``: read from the file ``config_path`` with ``flags`` (the
    flags given) on top; an error names the flag, or the file and field."""
    devices = None
    if config.gpus is not None:
        source, field = _origin("gpus", config_path, flags)
        devices = gpu_devices(config.gpus, source=source, field=field)
    memfree = None
    if config.memfree is not None:
        source, field = _origin("memfree", config_path, flags)
        memfree = parse_size(str(config.memfree), source=": ".join(filter(None, (source, field))))
    return start_gate(devices, memfree, config.load, report)


def _origin(name: str, config_path: str | None, flags: dict[str, object]) -> tuple[str, str | None]:
    if flags.get(name) is not None or config_path is None:
        return f"--{name}", None
    return config_path, f"$.{name}"


def check_fit(gate: StartGate | None, submitted: list[SubmittedBatch]) -> None:
    """InputError for the first run of ``submitted`` that asks for more GPUs than the
    daemon's pool has (any GPU at all, without a pool)."""
    pool = gate.pool.size if gate is not None and gate.pool is not None else 0
    named = [(item.source, item.batch) for item in submitted]
    check_gpu_requests(named, pool, "the daemon's gpus")
