"""The runs behind a PATH or a sweep, in order, for the views built from their outputs
(``status --joblog``, ``report``)."""

from __future__ import annotations

import os
from collections.abc import Iterable

from saturn_async.exceptions import InputError
from saturn_async.spec import load_batch_file
from saturn_async.spec.paths import is_remote
from saturn_async.status import run_dirs
from saturn_async.storage.layout import LAYOUTS, STDOUT, Layout
from saturn_async.sweep.state import load_record

RunRef = tuple[str, str | None, Layout]
"""A run's output location, its command when known (else it is in its events), and its
layout."""


def runs_of(path: str | None, name: str | None, max_input_size: int | None) -> list[RunRef]:
    """The runs of PATH (a batch or job file, an output directory, an ``s3://`` root) or
    of sweep ``name``: in the file's order, the sweep's, or sorted by path. An ``s3://``
    root gives one entry, the root, that :func:`refuse_remote` refuses."""
    if path is None:
        return [(task, None, LAYOUTS["sweep"]) for task in load_record(name or "").tasks]
    if is_remote(path):
        return [(path, None, LAYOUTS["batch"])]
    if os.path.isdir(path):
        return [
            (run, None, LAYOUTS["batch" if os.access(f"{run}/{STDOUT}", os.F_OK) else "sweep"])
            for run in run_dirs(os.path.abspath(path))
        ]
    batch = load_batch_file(path, max_input_size=max_input_size)
    layout = LAYOUTS[batch.layout]
    return [(run.remote_output_path or "", run.cmd, layout) for run in batch.runs]


def refuse_remote(runs: Iterable[RunRef], source: str) -> None:
    """InputError when a run's outputs are in S3: these views read every run's events,
    one GET each, so they work on a local copy."""
    remote = next((location for location, _, _ in runs if is_remote(location)), None)
    if remote is not None:
        raise InputError(
            f"reads each run's events, which are in S3 ({remote}): copy the outputs with "
            "`aws s3 sync`, then give the copy",
            source=source,
        )


def check_outside_runs(path: str, run_locations: Iterable[str], source: str) -> None:
    """Refuse (InputError) ``path`` when it is, or lies inside, a run's output location:
    the run would overwrite it, or saturn would mistake it for an output."""
    locations = set(run_locations)
    here = os.path.abspath(path)
    while True:
        if here in locations:
            raise InputError(f"{path} lies in the outputs of run {here}", source=source)
        parent = os.path.dirname(here)
        if parent == here:
            return
        here = parent
