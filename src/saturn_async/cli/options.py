"""Options shared by several commands."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import click

from saturn_async.exceptions import InputError
from saturn_async.spec.halt import HaltPolicy, parse_halt
from saturn_async.spec.input_file import DEFAULT_MAX_INPUT_SIZE, MAX_INPUT_SIZE_ENV, parse_size
from saturn_async.spec.models import MAX_NPROCS

SLOTS = click.IntRange(min=1, max=MAX_NPROCS)
"""The type of ``--nprocs``: at most PID_MAX_LIMIT, more processes than Linux can have."""


class FiniteRange(click.FloatRange):
    """A FloatRange that refuses ``nan`` and ``inf`` (which FloatRange lets through: NaN
    compares false with every bound), for seconds and minutes."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


class _Size(click.ParamType[int]):
    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value), source="")
        except InputError as exc:
            self.fail(exc.message, param, ctx)


max_input_size_option = click.option(
    "--max-input-size",
    type=_Size(),
    help="Refuse input files larger than this (bytes, or with K, M, G, T: 2G) "
    f"[default: ${MAX_INPUT_SIZE_ENV}, else {DEFAULT_MAX_INPUT_SIZE >> 30}G].",
)

grace_option = click.option(
    "--grace",
    type=FiniteRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds between SIGTERM and SIGKILL when stopping a run.",
)


def log_chunk_minutes_option(help: str) -> Callable[[Any], Any]:
    return click.option(
        "--log-chunk-minutes",
        type=FiniteRange(min=0, min_open=True),
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


joblog_option = click.option(
    "--joblog",
    type=click.Path(dir_okay=False),
    help="Append one line per finished attempt to FILE, in GNU parallel's --joblog format "
    "(created with its header; an existing file must be a joblog). See docs/cli.md.",
)


def _halt_policy(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> HaltPolicy | None:
    return None if value is None else parse_halt(value, source="--halt")


def halt_option(scope: str, help: str | None = None) -> Callable[[Any], Any]:
    """``--halt now|soon,fail=N|P%`` (GNU parallel's), over ``scope``."""
    return click.option(
        "--halt",
        metavar="WHEN,fail=N|P%",
        callback=_halt_policy,
        help=help
        or f"Stop early once N runs (or P% of all) have failed, over {scope}: soon starts "
        "no new run, now also stops the running ones (TERM, then KILL after the grace; "
        "they record a halted event). never (default) runs all. See docs/cli.md.",
    )
