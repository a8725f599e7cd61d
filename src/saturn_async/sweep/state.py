"""The local state store: what ``collect``, ``terminate`` and ``status`` need to find a sweep.

One directory per sweep name under ``$XDG_DATA_HOME/saturn_async/sweeps`` (default
``~/.local/share/saturn_async/sweeps``): ``sweep.json`` (a SweepRecord) and
``batches/N.json`` (the batch files dispatched, runnable by ``saturn batch``).

Batch files hold the runs' ``env`` (tokens, often), so the store is private: its
directories (``saturn_async`` and everything below) are 0700 and its files 0600. An
existing directory of ours with looser modes is tightened; one owned by another user is
refused (InputError), since they could read or replace what is written there.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec

from saturn_async.exceptions import InputError
from saturn_async.executors.jobs import ResultsVia
from saturn_async.spec.models import Batch
from saturn_async.storage.local import write_atomically

RECORD = "sweep.json"
PRIVATE = 0o600
"""The mode of every file in the store."""
TERMINATE = "terminate"
"""A file whose presence asks every local supervisor of the sweep to stop (LocalExecutor,
MultiprocessingExecutor, FuturesExecutor)."""


class SweepRecord(msgspec.Struct, kw_only=True):
    name: str
    created: str
    source: str
    """The sweep file as given to ``saturn run``."""
    executor: dict[str, Any]
    results: dict[str, Any]
    results_root: str
    tasks: list[str]
    """Every task's output location, in the sweep file's order."""
    batches: int
    client_pid: int
    client_started: int
    """The ``saturn run`` process (pid and start time in clock ticks, so a reused pid is
    not mistaken for it)."""
    handle: dict[str, Any] = msgspec.field(default_factory=dict)
    """What the executor needs to find its batches again (Dask keys, for instance)."""
    results_via: ResultsVia | None = None
    """The channel carrying the outputs to the client (results backends Dask and Ray)."""
    halted_by: str | None = None
    """The task whose failure set off the sweep's halt (``saturn run --halt``), if one did."""


def store_root() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local/share")
    return Path(base) / "saturn_async" / "sweeps"


def sweep_dir(name: str) -> Path:
    return store_root() / name


def known_names() -> list[str]:
    try:
        return sorted(p.name for p in store_root().iterdir() if (p / RECORD).is_file())
    except FileNotFoundError:
        return []


def load_record(name: str) -> SweepRecord:
    """The record of sweep ``name``; an unknown name is an InputError listing known names."""
    path = sweep_dir(name) / RECORD
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        known = ", ".join(known_names()) or "none yet"
        raise InputError(f"no sweep named {name!r} (known: {known})", source="--name") from None
    try:
        return msgspec.json.decode(data, type=SweepRecord)
    except msgspec.MsgspecError as exc:
        raise InputError(f"unreadable sweep record: {exc}", source=str(path)) from exc


def check_name_free(name: str, *, replace: bool) -> None:
    """Refuse a name in use unless ``replace``, or a store that is not private to us
    (InputError). Creates nothing: a refused sweep leaves no trace."""
    _private_dirs(store_root(), create=False)
    if not replace and (sweep_dir(name) / RECORD).exists():
        raise InputError(
            f"a sweep named {name!r} exists; pass --replace to forget it and reuse "
            "the name, or pick another --name",
            source="--name",
        )


def create(record: SweepRecord, batches: Iterable[Batch], *, replace: bool) -> Path:
    """Write a new sweep's record and batch files; refuse a name in use unless ``replace``."""
    check_name_free(record.name, replace=replace)
    directory = sweep_dir(record.name)
    _private_dirs(directory.parent)
    if directory.exists():
        shutil.rmtree(directory)
    _private_dirs(directory / "batches")
    for index, batch in enumerate(batches):
        write_atomically(
            str(directory / "batches" / f"{index}.json"), msgspec.json.encode(batch), PRIVATE
        )
    save_record(record)
    return directory


def _private_dirs(directory: Path, *, create: bool = True) -> None:
    """Create ``directory`` and the store's directories above it, 0700; tighten ours that
    are looser; refuse one that is not a directory or is another user's. Without
    ``create``, only check the ones that exist."""
    top = store_root().parent
    if create:
        top.parent.mkdir(parents=True, exist_ok=True)
    for path in [*reversed(directory.relative_to(top).parents), directory.relative_to(top)]:
        level = top / path
        try:
            if create:
                os.mkdir(level, 0o700)
                continue
            info = os.stat(level)
        except FileExistsError:
            info = os.stat(level)
        except FileNotFoundError:
            return  # nothing below it exists either
        if not stat.S_ISDIR(info.st_mode):
            raise InputError("the sweep state store: not a directory", source=str(level))
        if info.st_uid != os.geteuid():
            raise InputError(
                f"the sweep state store is owned by uid {info.st_uid}, not by this user "
                "(it holds the runs' env); remove it or set XDG_DATA_HOME",
                source=str(level),
            )
        if create and stat.S_IMODE(info.st_mode) & 0o077:
            os.chmod(level, 0o700)


def discard(name: str) -> None:
    """Forget a sweep whose dispatch failed."""
    shutil.rmtree(sweep_dir(name), ignore_errors=True)


def save_record(record: SweepRecord) -> None:
    write_atomically(str(sweep_dir(record.name) / RECORD), msgspec.json.encode(record), PRIVATE)


def task_commands(name: str) -> dict[str, str]:
    """The command of every dispatched task, by output location, from the sweep's batch
    files (for displays: an unreadable batch file leaves its tasks out)."""
    commands: dict[str, str] = {}
    for path in sorted((sweep_dir(name) / "batches").glob("*.json")):
        try:
            batch = msgspec.json.decode(path.read_bytes(), type=Batch)
        except (OSError, msgspec.MsgspecError):
            continue
        commands.update((run.remote_output_path or "", run.cmd) for run in batch.runs)
    return commands


class TaskCommands(Mapping[str, str]):
    """:func:`task_commands`, read on first use: a sweep followed without a display
    whose tasks all succeed never reads them (a million commands, ~170 MB)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._commands: dict[str, str] | None = None

    def _read(self) -> dict[str, str]:
        if self._commands is None:
            self._commands = task_commands(self.name)
        return self._commands

    def __getitem__(self, location: str) -> str:
        return self._read()[location]

    def __iter__(self) -> Iterator[str]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())


def terminate_file(name: str) -> str:
    return str(sweep_dir(name) / TERMINATE)
