"""Drain, signals and reload: how the daemon stops taking work, stops, and re-reads
its settings."""

from __future__ import annotations

import signal

import anyio

from saturn_async.daemon.config import RELOADABLE, DaemonConfig, load_config
from saturn_async.daemon.notify import sd_notify
from saturn_async.daemon.pausing import Pausing
from saturn_async.exceptions import SaturnError


class Shutdown(Pausing):
    def _drain(self, why: str) -> None:
        if not self.draining:
            self.draining = True
            self.supervisor.retries_cut.set()  # a run waiting to retry ends now
            self.logbook(
                "info",
                "draining",
                f"{why}: finishing {len(self._ranks)} running runs, starting no new ones",
                queued=self.state.queued,
            )
            sd_notify("STATUS=draining")
            self._notify()

    async def _signals(self) -> None:
        stops = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)  # QUIT: as TERM, never a core
        with anyio.open_signal_receiver(*stops, signal.SIGHUP) as signals:
            async with anyio.create_task_group() as tg:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        self._reload()
                    elif not self.draining:
                        self._drain(signal.Signals(signum).name)
                        tg.start_soon(self._stop_after_shutdown_grace, signum)
                    else:
                        self.supervisor.stop(signum)  # a second signal: stop the runs now
                        self._notify()

    async def _stop_after_shutdown_grace(self, signum: int) -> None:
        await anyio.sleep(self.config.shutdown_grace)
        if self._ranks and not self.supervisor.stopping:
            self.logbook(
                "warning",
                "stopping_runs",
                f"shutdown grace over: stopping {len(self._ranks)} running runs",
            )
            self.supervisor.stop(signum)
            self._notify()

    def _reload(self) -> None:
        try:
            new = load_config(self.config_path, self.overrides)
        except SaturnError as exc:
            self.logbook("error", "reload_failed", f"kept the old settings: {exc}")
            return
        old = self.config
        changed = {f: getattr(new, f) for f in RELOADABLE if getattr(new, f) != getattr(old, f)}
        fixed = [
            f for f in DaemonConfig.__struct_fields__
            if f not in RELOADABLE and getattr(new, f) != getattr(old, f)
        ]  # fmt: skip
        for name in fixed:
            setattr(new, name, getattr(old, name))
        self.config = new
        self.supervisor.grace = new.grace
        self.supervisor.run_storage.log_chunk_seconds = new.log_chunk_minutes * 60
        self.logbook("info", "reloaded", "settings reloaded", **changed)
        if fixed:
            self.logbook(
                "warning", "restart_needed", f"changes to {', '.join(fixed)} need a restart"
            )
        self._notify()
