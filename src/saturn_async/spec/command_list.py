"""Command lists (``saturn batch --commands FILE``): one run's ``cmd`` per line.

Each line that is neither empty (or blank) nor a ``#`` comment is one run; its outputs go
to ``OUTPUT/<index among the runs>``, as a job file's runs without a
``remote_output_path`` do. Lines end at ``\\n`` (a ``\\r`` before it is dropped). The list
becomes one :class:`Batch`, resolved and checked as a batch file is; errors name the
file and the line (``cmds.txt:7: ...``), or the flag.
"""

from __future__ import annotations

import re
from array import array

from saturn_async.exceptions import InputError
from saturn_async.spec.check import MAX_ARG_BYTES
from saturn_async.spec.input_file import read_input, read_stdin
from saturn_async.spec.models import Batch, Run
from saturn_async.spec.resolve import resolve_batch

STDIN = "-"
_RUN_FIELD = re.compile(r"^\$\.runs\[(\d+)\]")


def load_command_list(
    path: str, *, output: str, nprocs: int, max_input_size: int | None = None
) -> Batch:
    """Read the command list at ``path`` (``-``: standard input) into a resolved batch of
    ``nprocs`` slots whose runs write under ``output``."""
    source = "<stdin>" if path == STDIN else path
    data = read_stdin(source, max_input_size) if path == STDIN else read_input(path, max_input_size)
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        at = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"not UTF-8 text (byte {exc.start})", source=f"{source}:{at}") from exc
    del data
    runs: list[Run] = []
    lines = array("I")  # the line number of each run, for messages
    for number, line in enumerate(text.split("\n"), start=1):
        cmd = line[:-1] if line.endswith("\r") else line
        stripped = cmd.lstrip()
        if not stripped or stripped[0] == "#":
            continue
        if len(cmd) > MAX_ARG_BYTES // 4 or "\0" in cmd:
            _check_line(cmd, f"{source}:{number}")
        runs.append(Run(cmd=cmd))
        lines.append(number)
    del text
    if not runs:
        raise InputError("holds no command (only blank lines and # comments)", source=source)
    batch = Batch(nprocs=nprocs, remote_output_path=output, runs=runs)
    try:
        return resolve_batch(batch, source)
    except InputError as exc:
        raise _located(exc, source, lines) from exc


def _check_line(cmd: str, where: str) -> None:
    """The checks ``spec.check`` makes on a ``cmd``, with the line as the location."""
    if "\0" in cmd:
        raise InputError("holds a NUL byte, which no command can", source=where)
    size = len(cmd.encode())
    if size > MAX_ARG_BYTES:
        raise InputError(
            f"is {size:,} bytes; Linux passes at most {MAX_ARG_BYTES:,} bytes as one "
            "argument (put a long command in a script)",
            source=where,
        )


def _located(exc: InputError, source: str, lines: array[int]) -> InputError:
    """``exc`` (from resolving) naming the line of the run, or ``--output``."""
    if exc.field is None:
        return exc
    if match := _RUN_FIELD.match(exc.field):
        return InputError(exc.message, source=f"{source}:{lines[int(match.group(1))]}")
    return InputError(exc.message, source="--output")
