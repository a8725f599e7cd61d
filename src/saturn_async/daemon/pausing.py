"""The daemon pauses while a directory it writes is full, and resumes once there is room."""

from __future__ import annotations

import anyio
import anyio.to_thread

from saturn_async.daemon.core import DaemonCore
from saturn_async.daemon.disk import free_bytes
from saturn_async.daemon.notify import sd_notify
from saturn_async.spec.paths import is_remote

_DISK_CHECK_SECONDS = 1.0
_MB = 1 << 20


class Pausing(DaemonCore):
    async def _watch_disk(self) -> None:
        while True:
            await anyio.sleep(_DISK_CHECK_SECONDS)
            reason = await anyio.to_thread.run_sync(self._disk_problem)
            if reason is None and self.journal.unwritten and not self.journal.write_unwritten():
                reason = f"cannot write the journal {self.journal.path}: {self.journal.error}"
            if reason is not None:
                self._pause(reason)
            elif self.paused is not None:
                self.logbook("info", "resumed", "there is room again; starting runs")
                self.paused = None
                self._resumed.set()
                sd_notify("STATUS=running")
                self._notify()

    def _state_dir_full(self) -> bool:
        return free_bytes(self.paths.state_dir) < self.config.min_free_mb * _MB

    def _disk_problem(self) -> str | None:
        need = self.config.min_free_mb * _MB
        directories = {self.paths.state_dir, self.supervisor.run_storage.staging_dir}
        for batch in list(self.state.batches.values()):
            root = batch.batch.remote_output_path
            if root is not None and not is_remote(root):
                directories.add(root)
        for directory in sorted(directories):
            try:
                free = free_bytes(directory)
            except OSError:
                continue
            if free < need:
                return (
                    f"{directory} has {free / _MB:.1f} MB free, "
                    f"under min_free_mb {self.config.min_free_mb:g}"
                )
        return None
