"""The halt policy (``--halt``, ``halt:``): GNU parallel's ``now|soon,fail=N|P%``.

``soon``: once N runs have failed (or P% of all the runs), start no new run and let the
running ones finish. ``now``: also stop the running ones (TERM, then KILL after the
grace). A run counts as failed when its final status (after its retries) is not 0.
``never`` (the default) runs everything. GNU parallel's ``success=`` and ``done=`` are
not taken: a run stopped by a halt records a failure, so a sweep halted on success
would still end as failed; see docs/cli.md, "--halt".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from saturn_async.exceptions import InputError

_FORM = re.compile(r"(now|soon),fail=(\d+)(%?)")
_SYNTAX = "expected never, now,fail=N, soon,fail=N, now,fail=P% or soon,fail=P%"


@dataclass(frozen=True, slots=True)
class HaltPolicy:
    when: Literal["now", "soon"]
    """``now`` stops the running runs; ``soon`` lets them finish."""
    count: int = 0
    """Halt after this many failed runs (``fail=N``); 0 when ``percent`` is given."""
    percent: int = 0
    """Halt once this share of all the runs has failed (``fail=P%``, 0 < P < 100)."""

    def threshold(self, total: int) -> int:
        """How many failed runs, of ``total``, set the halt off (GNU parallel's rule:
        ``fail=P%`` halts once the failures reach P% of all the runs; at least 1)."""
        if self.count:
            return self.count
        return max(1, math.ceil(total * self.percent / 100))

    def __str__(self) -> str:
        return f"{self.when},fail=" + (f"{self.count}" if self.count else f"{self.percent}%")


def parse_halt(text: str, *, source: str, field: str = "") -> HaltPolicy | None:
    """The policy ``text`` names (None for ``never``); InputError naming ``source`` and
    ``field`` for anything else."""
    if text == "never":
        return None
    match = _FORM.fullmatch(text)
    if match is None:
        if re.fullmatch(r"(now|soon),(success|done)=\d+%?", text):
            message = f"success= and done= are not supported (a halted run fails); {_SYNTAX}"
        else:
            message = _SYNTAX
        raise InputError(f"{text!r}: {message}", source=source, field=field)
    when, number, percent = match.groups()
    value = int(number)
    if percent:
        if not 0 < value < 100:
            raise InputError(
                f"{text!r}: the percentage must be above 0% and below 100%",
                source=source,
                field=field,
            )
        return HaltPolicy("now" if when == "now" else "soon", percent=value)
    if value < 1:
        raise InputError(f"{text!r}: fail= needs at least 1 failed run", source=source, field=field)
    return HaltPolicy("now" if when == "now" else "soon", count=value)
