"""The spool directory: batch files dropped in by job systems that place files.

A file is taken only under a final name: names starting with ``.`` or ending in
``.tmp`` are skipped, so a writer writes under such a name and renames. Taking a file
is a rename into ``.claimed/`` (no two daemons take one file), then the batch is
journaled, then the file moves to ``accepted/`` (or to ``rejected/``, beside a
``NAME.error`` saying why). A crash between those steps is settled at the next start:
a claimed file whose accepted name the journal holds was accepted; others are read
again.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

BATCH_SUFFIXES = (".json", ".yaml", ".yml")
CLAIMED, ACCEPTED, REJECTED = ".claimed", "accepted", "rejected"


@dataclass(frozen=True, slots=True)
class SpoolFile:
    claimed: str
    """Where the file is while it is read."""
    accepted: str
    """Where it goes once journaled: the batch's ``source``."""
    rejected: str


class Spool:
    def __init__(self, directory: str) -> None:
        self.directory = os.path.abspath(directory)
        for sub in (CLAIMED, ACCEPTED, REJECTED):
            os.makedirs(os.path.join(self.directory, sub), exist_ok=True)

    def claimed(self) -> list[SpoolFile]:
        """Files a previous incarnation claimed and did not settle."""
        folder = os.path.join(self.directory, CLAIMED)
        return [self._file(name) for name in sorted(os.listdir(folder))]

    def claim_new(self) -> list[SpoolFile]:
        """Claim the batch files waiting in the spool directory, oldest name first."""
        taken = []
        for name in sorted(os.listdir(self.directory)):
            if name.startswith(".") or not name.endswith(BATCH_SUFFIXES):
                continue
            file = self._file(name)
            try:
                os.rename(os.path.join(self.directory, name), file.claimed)
            except FileNotFoundError:
                continue  # taken by someone else meanwhile
            taken.append(file)
        return taken

    def _file(self, name: str) -> SpoolFile:
        accepted = os.path.join(self.directory, ACCEPTED, name)
        if os.path.lexists(accepted):
            stem, dot, suffix = name.rpartition(".")
            number = 1
            while os.path.lexists(accepted):
                number += 1
                accepted = os.path.join(self.directory, ACCEPTED, f"{stem}.{number}{dot}{suffix}")
        return SpoolFile(
            claimed=os.path.join(self.directory, CLAIMED, name),
            accepted=accepted,
            rejected=os.path.join(self.directory, REJECTED, name),
        )

    @staticmethod
    def settle_accepted(file: SpoolFile) -> None:
        os.rename(file.claimed, file.accepted)

    @staticmethod
    def settle_rejected(file: SpoolFile, reason: str) -> None:
        os.rename(file.claimed, file.rejected)
        with contextlib.suppress(OSError), open(file.rejected + ".error", "w") as f:
            f.write(reason + "\n")
