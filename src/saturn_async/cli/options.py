"""Options shared by commands that run things (``batch``, ``run``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

grace_option = click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds between SIGTERM and SIGKILL when stopping a run.",
)


def log_chunk_minutes_option(help: str) -> Callable[[Any], Any]:
    return click.option(
        "--log-chunk-minutes",
        type=click.FloatRange(min=0, min_open=True),
        default=1.0,
        show_default=True,
        help=help,
    )
