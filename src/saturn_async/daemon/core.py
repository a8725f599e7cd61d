"""What every part of the daemon shares: its settings, state, journal, slots and log.

The daemon is built in layers, each a class over the one before it and each of one
purpose: this core; pausing on a full disk (``pausing``); drain, signals and reload
(``shutdown``); the control requests (``requests``); the spool (``spooling``); per-batch
halts (``halting``); and scheduling and recovery (``service``, the
:class:`~saturn_async.daemon.service.Daemon`).
A layer calls only into the layers below it.
"""

from __future__ import annotations

from functools import partial

import anyio
import anyio.abc

from saturn_async.daemon.config import DaemonConfig
from saturn_async.daemon.journal import AnyRecord, Finish, Journal
from saturn_async.daemon.log import DaemonLog
from saturn_async.daemon.notify import sd_notify
from saturn_async.daemon.paths import DaemonPaths
from saturn_async.daemon.spool import Spool
from saturn_async.daemon.start_limits import daemon_gate
from saturn_async.daemon.state import DaemonState
from saturn_async.spec.memory import memory_bytes
from saturn_async.supervisor.halt import Halt
from saturn_async.supervisor.memory_caps import MemoryCaps
from saturn_async.supervisor.process import RunProcess
from saturn_async.supervisor.supervisor import Supervisor


class DaemonCore:
    def __init__(
        self,
        paths: DaemonPaths,
        config: DaemonConfig,
        *,
        config_path: str | None = None,
        overrides: dict[str, object] | None = None,
    ) -> None:
        self.paths = paths
        self.config = config
        self.config_path = config_path
        self.overrides = overrides or {}
        self.logbook = DaemonLog(config.log_format)
        self.state = DaemonState()
        self.draining = False
        self.paused: str | None = None
        self._changed = anyio.Event()
        self._resumed = anyio.Event()
        self._ranks: set[int] = set()
        self._procs: dict[tuple[str, int], RunProcess] = {}
        self._kill_timers: dict[tuple[str, int], anyio.CancelScope] = {}
        self._halts: dict[str, Halt] = {}
        """The halts of live batches submitted with one, by batch id."""
        self._sync_wanted = anyio.Event()
        report = partial(self.logbook, "warning", "run_outputs")
        memory = None if config.memory is None else memory_bytes(config.memory, source="memory")
        self.supervisor = Supervisor(
            config.nprocs,
            grace=config.grace,
            report=report,
            log_chunk_seconds=config.log_chunk_minutes * 60,
            staging_dir=config.staging_dir,
            memory_caps=MemoryCaps(memory, config.memory_cap, report),
        )
        self.gate = daemon_gate(
            config,
            config_path,
            self.overrides,
            lambda message: self.logbook("warning", "waiting", message),
        )
        self.spool = Spool(config.spool) if config.spool else None
        self._journal: Journal | None = None
        self._runs: anyio.abc.TaskGroup

    @property
    def journal(self) -> Journal:
        assert self._journal is not None
        return self._journal

    def _notify(self) -> None:
        self._changed.set()

    def _record(self, record: AnyRecord) -> None:
        self.journal.append(record)
        self.state.apply(record)
        if self.journal.error is not None:
            self._pause(f"cannot write the journal {self.journal.path}: {self.journal.error}")
        if isinstance(record, Finish):
            self._sync_wanted.set()

    def _pause(self, reason: str) -> None:
        if self.paused is None:
            self.logbook("error", "disk_full", f"{reason}; starting no runs until there is room")
            self._resumed = anyio.Event()
            sd_notify(f"STATUS=paused: {reason}")
        self.paused = reason
