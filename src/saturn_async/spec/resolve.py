"""Resolve a decoded batch in place: defaults, absolute output paths, and their checks."""

from __future__ import annotations

import os

from saturn_async.exceptions import InputError
from saturn_async.spec.check import check_runnable
from saturn_async.spec.halt import parse_halt
from saturn_async.spec.models import Batch, Run
from saturn_async.spec.paths import (
    NAME_MAX,
    RESERVED,
    absolute,
    check_length,
    is_strictly_inside,
    local_path,
    normalize_location,
    plainly_inside,
)


def resolve_batch(
    batch: Batch,
    source: str,
    *,
    nprocs: int | None = None,
    remote_output_path: str | None = None,
    output_flag: str | None = None,
) -> Batch:
    """Fill in ``nprocs`` and every run's absolute ``remote_output_path`` (and make its
    ``local_results_dir`` absolute), then validate.

    Overrides (from command-line flags) win over the file; ``output_flag`` names the
    caller's flag that gives the output root, if it has one. Raises InputError naming the
    file and field for: a missing ``nprocs`` or output root, an unsupported scheme, a run
    path outside the root (``..``), two runs with one path, or one run's path inside
    another's; and for a run that could not be spawned (see ``spec.check``).
    """
    if nprocs is not None:
        batch.nprocs = nprocs
    if batch.nprocs is None:
        raise InputError(
            "required field is missing (or pass --nprocs)", source=source, field="$.nprocs"
        )
    if batch.halt is not None:
        parse_halt(batch.halt, source=source, field="$.halt")
    if remote_output_path is not None:
        batch.remote_output_path = remote_output_path
    if batch.remote_output_path is None:
        hint = f" (or pass {output_flag})" if output_flag else ""
        raise InputError(
            f"required field is missing{hint}",
            source=source,
            field="$.remote_output_path",
        )
    base = normalize_location(batch.remote_output_path, source=source, field="$.remote_output_path")
    batch.remote_output_path = base
    # The default paths are base/INDEX: the last is the longest.
    check_length(f"{base}/{len(batch.runs) - 1}", source, "$.remote_output_path")
    if batch.working_dir is not None:
        batch.working_dir = local_path(batch.working_dir, source=source, field="$.working_dir")
    if not _resolve_plain(batch.runs, base):
        _resolve_each(batch.runs, base, source)
    check_runnable(batch, source)
    return batch


def _resolve_plain(runs: list[Run], base: str) -> bool:
    """Resolve the runs' output paths and ``local_results_dir`` as :func:`_resolve_each`
    would, batch-wide, when no run can fail: their ``local_results_dir`` pass
    ``local_path`` (and are made absolute, only those not already so); the paths they give
    are plainly inside ``base`` (``spec.paths.plainly_inside``), none twice, none inside
    another's. Returns False, having changed nothing, when some run may fail: then
    :func:`_resolve_each` decides, and names the first that does."""
    dirs = [run.local_results_dir for run in runs if run.local_results_dir is not None]
    if dirs and not _plain_dirs(dirs):
        return False
    paths = [run.remote_output_path for run in runs if run.remote_output_path is not None]
    if not plainly_inside(base, paths):
        return False
    root = "" if base == "/" else base
    defaults = len(paths) < len(runs)
    if paths:
        owned = set(paths)
        if defaults:
            owned.update(
                f"{root}/{i}" for i, run in enumerate(runs) if run.remote_output_path is None
            )
        if len(owned) != len(runs) or _one_inside_another(paths, owned, root):
            return False
    if defaults:
        for index, run in enumerate(runs):
            if run.remote_output_path is None:
                run.remote_output_path = f"{root}/{index}"
    if dirs and not plainly_inside("/", dirs):  # some not absolute, or not normalized
        for run in runs:
            if run.local_results_dir is not None:
                run.local_results_dir = absolute(run.local_results_dir)
    return True


def _one_inside_another(paths: list[str], owned: set[str], root: str) -> bool:
    """Whether one of ``paths``, plainly inside ``root``, lies inside a path of ``owned``."""
    if "".join(paths).count("/") == len(paths) * (root.count("/") + 1):
        return False  # each is root/NAME: its parent is the root
    for path in paths:
        parent = path.rpartition("/")[0]
        while len(parent) > len(root):
            if parent in owned:
                return True
            parent = parent.rpartition("/")[0]
    return False


def _plain_dirs(dirs: list[str]) -> bool:
    """True when every ``local_results_dir`` of ``dirs`` passes ``local_path``; checking
    none that is too short, even below the current directory, to fail it."""
    if "\0" in "".join(dirs):
        return False
    if max(map(len, dirs)) + 1 + len(os.getcwd()) <= NAME_MAX // 4:
        return True
    try:
        for path in dirs:
            local_path(path, source="", field="")
    except InputError:
        return False
    return True


def _resolve_each(runs: list[Run], base: str, source: str) -> None:
    """Check and resolve the runs' paths one by one, raising InputError for the first
    that fails."""
    owner: dict[str, int] = {}
    # The paths the file gives: only they can lie inside another run's path (a default
    # one, base/INDEX, has base as its parent), so only they are walked up below.
    chosen: list[str] = []
    for index, run in enumerate(runs):
        if run.local_results_dir is not None:
            where = f"$.runs[{index}].local_results_dir"
            run.local_results_dir = local_path(run.local_results_dir, source=source, field=where)
        if run.remote_output_path is None:
            path = f"{base}/{index}" if base != "/" else f"/{index}"
        else:
            path = _chosen_path(run.remote_output_path, base, source, index)
            chosen.append(path)
        previous = owner.setdefault(path, index)
        if previous != index:
            raise InputError(
                f"{path!r} is also the output path of $.runs[{previous}]",
                source=source,
                field=f"$.runs[{index}].remote_output_path",
            )
        run.remote_output_path = path
    for path in chosen:
        parent, up = path, os.path.dirname(path)
        # No path starts with '//' (``spec.paths.absolute``), where dirname('//') is '//'.
        while len(up) > len(base) and up != parent:
            parent = up
            if parent in owner:
                raise InputError(
                    f"{path!r} lies inside the output path of $.runs[{owner[parent]}]",
                    source=source,
                    field=f"$.runs[{owner[path]}].remote_output_path",
                )
            up = os.path.dirname(parent)


def _chosen_path(value: str, base: str, source: str, index: int) -> str:
    """A run's own ``remote_output_path``, normalized; it must lie inside ``base`` and
    outside saturn's records."""
    field = f"$.runs[{index}].remote_output_path"
    path = normalize_location(value, source=source, field=field)
    if not is_strictly_inside(base, path):
        raise InputError(
            f"{value!r} is not inside the batch's remote_output_path {base!r}",
            source=source,
            field=field,
        )
    if path[len(base) :].lstrip("/").split("/", 1)[0] == RESERVED:
        raise InputError(
            f"{path!r} is inside {RESERVED}/, which saturn keeps for its own records",
            source=source,
            field=field,
        )
    return path
