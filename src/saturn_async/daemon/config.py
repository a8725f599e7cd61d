"""The daemon's settings: a YAML file (re-read on SIGHUP) overridden by flags."""

from __future__ import annotations

import os
from typing import Annotated, Literal

import msgspec

from saturn_async.spec.decode import convert_section, load_yaml_mapping
from saturn_async.spec.memory import memory_bytes
from saturn_async.spec.models import AtLeastOne, GpuSpec, MemorySize, NonNegative, Slots
from saturn_async.supervisor.memory_caps import CapMode


class DaemonConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    nprocs: Slots = msgspec.field(default_factory=lambda: os.cpu_count() or 1)
    """Slots: runs at a time (default: the number of CPUs)."""
    grace: NonNegative = 10.0
    """Seconds between SIGTERM and SIGKILL when stopping a run."""
    shutdown_grace: NonNegative = 60.0
    """On SIGTERM: how long running runs may finish before they are stopped."""
    log_chunk_minutes: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    staging_dir: str | None = None
    spool: str | None = None
    spool_interval: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    min_free_mb: NonNegative = 64.0
    """Start no run while the state, staging or an output directory has less free."""
    log_format: Literal["text", "json"] = "text"
    max_connections: AtLeastOne = 64
    """Control connections open at once; one more gets an error and is closed at once."""
    idle_timeout: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    """Seconds a control connection may wait for the client's next byte (or for it to
    read the reply) before it is closed."""
    max_frame_mb: Annotated[float, msgspec.Meta(gt=0)] = 256.0
    """The largest request (a submit of a million runs is about 100 MB)."""
    memory: MemorySize | None = None
    """The memory cap of runs whose batch sets none (docs/job-format.md)."""
    memory_cap: CapMode = "enforce"
    """Without cgroup access: refuse capped runs, or cap their address space."""
    gpus: GpuSpec | None = None
    """GPUs handed to runs, as ``saturn batch --gpus``; with ``memfree`` and ``load``, see
    ``daemon/start_limits.py``."""
    memfree: AtLeastOne | str | None = None
    load: Annotated[float, msgspec.Meta(gt=0)] | None = None


RELOADABLE = (
    "nprocs",
    "grace",
    "shutdown_grace",
    "log_chunk_minutes",
    "min_free_mb",
    "max_connections",
    "idle_timeout",
    "max_frame_mb",
)
"""What SIGHUP changes; the rest needs a restart (the log says so when it differs)."""


def load_config(path: str | None, overrides: dict[str, object]) -> DaemonConfig:
    """The file's settings (when given) with ``overrides`` (the flags given) on top."""
    values: dict[str, object] = dict(load_yaml_mapping(path)) if path else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = convert_section(values, DaemonConfig, source=path or "flags", field="$")
    if config.memory is not None:
        memory_bytes(config.memory, source=path or "flags", field="$.memory")
    return config
