"""Find a sweep's executor by ``executor.class_spec``: a built-in name, ``module:attr`` or
an entry point of the group ``saturn_async.executors`` (docs/executors.md). Built-ins are
``module:attr`` strings too, imported only when a sweep names them."""

from __future__ import annotations

from typing import Any

from saturn_async.exceptions import InputError
from saturn_async.executors.abc import Executor
from saturn_async.plugins import load_class
from saturn_async.spec.decode import convert_section
from saturn_async.spec.sweep import class_spec_of
from saturn_async.sweep.state import SweepRecord

ENTRY_POINTS = "saturn_async.executors"
DEFAULT = {"class_spec": "LocalExecutor"}
_BUILTINS = {
    "LocalExecutor": "saturn_async.executors.local:LocalExecutor",
    "MultiprocessingExecutor": "saturn_async.executors.futures:MultiprocessingExecutor",
    "FuturesExecutor": "saturn_async.executors.futures:FuturesExecutor",
    "DaskExecutor": "saturn_async.executors.dask.client:DaskExecutor",
    "RayExecutor": "saturn_async.executors.ray.client:RayExecutor",
    "KubernetesExecutor": "saturn_async.executors.kubernetes.client:KubernetesExecutor",
    "SlurmExecutor": "saturn_async.executors.slurm.executor:SlurmExecutor",
}


def executor_class(section: dict[str, Any], *, source: str) -> tuple[type[Executor], Any]:
    """The executor class a sweep's ``executor`` section names, and its checked config."""
    field = "$.executor"
    spec = class_spec_of(section, source=source, field=field)
    cls = load_class(spec, _BUILTINS, ENTRY_POINTS, source=source, field=f"{field}.class_spec")
    if not issubclass(cls, Executor):
        raise InputError(f"{spec!r} is not an executor", source=source, field=f"{field}.class_spec")
    return cls, convert_section(section, cls.Config, source=source, field=field)


def open_executor(record: SweepRecord) -> Executor:
    """The sweep's executor, built again from its record (for collect and terminate);
    enter it with ``async with``."""
    cls, config = executor_class(record.executor, source=record.source)
    return cls(config, record)
