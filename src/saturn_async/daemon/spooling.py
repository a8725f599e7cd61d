"""Taking batch files from the spool directory (see ``daemon.spool``)."""

from __future__ import annotations

import os

import anyio
import anyio.to_thread

from saturn_async.daemon.admission import check_apart
from saturn_async.daemon.protocol import SubmittedBatch
from saturn_async.daemon.requests import Requests
from saturn_async.daemon.spool import Spool, SpoolFile
from saturn_async.exceptions import SaturnError
from saturn_async.spec import load_batch_files


class Spooling(Requests):
    async def _settle_claimed(self, spool: Spool) -> None:
        sources = {b.source for b in self.state.batches.values()}
        sources.update(info.source for info in self.state.done)
        for file in spool.claimed():
            if file.accepted in sources:
                spool.settle_accepted(file)
            else:
                await self._take_spooled(spool, file)

    async def _watch_spool(self, spool: Spool) -> None:
        while True:
            if not self.draining and self.paused is None:
                for file in await anyio.to_thread.run_sync(spool.claim_new):
                    await self._take_spooled(spool, file)
            await anyio.sleep(self.config.spool_interval)

    async def _take_spooled(self, spool: Spool, file: SpoolFile) -> None:
        try:
            # load_batch_files also checks local_results_dir (a path saturn must create).
            [batch] = await anyio.to_thread.run_sync(load_batch_files, [file.claimed])
            live = [b.batch for b in self.state.batches.values()]
            taken = [SubmittedBatch(source=file.claimed, batch=batch)]
            await anyio.to_thread.run_sync(check_apart, taken, live)
            await self.supervisor.open_roots([batch])
        except SaturnError as exc:
            reason = str(exc).replace(file.claimed, os.path.basename(file.claimed))
            spool.settle_rejected(file, reason)
            self.logbook("error", "spool_rejected", f"rejected {file.rejected}: {reason}")
            return
        self._accept(file.accepted, batch)
        spool.settle_accepted(file)
