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


def daemon_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--name`` and ``--socket``: which daemon a command talks to."""
    func = click.option(
        "--socket",
        type=click.Path(dir_okay=False),
        help="The daemon's control socket [default: $SATURN_DAEMON_SOCKET, else "
        "$XDG_RUNTIME_DIR/saturn_async/daemon-NAME.sock, else daemon.sock in its state dir].",
    )(func)
    return click.option(
        "--name",
        default="default",
        show_default=True,
        envvar="SATURN_DAEMON_NAME",
        help="Which daemon, when a machine runs several ($SATURN_DAEMON_NAME).",
    )(func)
