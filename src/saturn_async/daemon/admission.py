"""Checks on batches that arrive already resolved: on the control socket (from any
client, as any bytes) and from the journal when it is replayed.

They are the checks ``saturn batch`` makes on a file (``resolve_batch``: containment,
duplicates, nesting, and ``spec.check``: what could not be spawned), run again on the
resolved batch, plus what only a resolved batch must satisfy: every output path is
absolute, and the batch's source names a file or URL on one line.
"""

from __future__ import annotations

from collections.abc import Sequence

from saturn_async.daemon.protocol import SubmittedBatch
from saturn_async.exceptions import InputError
from saturn_async.spec import check_distinct_outputs
from saturn_async.spec.models import Batch
from saturn_async.spec.overlap import OutputIndex
from saturn_async.spec.paths import CONTROL_CHARACTERS, real_output_paths
from saturn_async.spec.resolve import resolve_batch
from saturn_async.spec.results_dirs import check_local_results_dirs


def check_submitted(submitted: list[SubmittedBatch], live: Sequence[Batch] = ()) -> None:
    """Raise InputError for the first batch of a submit request that ``saturn batch``
    would refuse, for batches of the request whose output paths meet (a run's is, lies
    inside or holds another batch's, or a root lies inside one or in another's
    ``.saturn/``: ``spec.overlap.check_distinct_outputs``), for a
    ``local_results_dir`` saturn did not create (not checked again at replay, where it
    may be one the daemon created before a crash), or for a run output path or
    ``local_results_dir`` that is, lies inside or holds a run output path of a ``live``
    batch (queued or running)."""
    for number, item in enumerate(submitted):
        _check_source(item.source, f"$.batches[{number}].source")
        admit(item.batch, item.source)
    check_distinct_outputs([(item.source, item.batch) for item in submitted])
    check_local_results_dirs([i.batch for i in submitted], [i.source for i in submitted], live)
    check_apart(submitted, live)


def check_apart(submitted: list[SubmittedBatch], live: Sequence[Batch]) -> None:
    """InputError for the first run output path of ``submitted`` that is, lies inside or
    holds a run output path of ``live``."""
    if not live:
        return
    index = OutputIndex(live)
    for item in submitted:
        for number, real in enumerate(real_output_paths(item.batch)):
            clash = index.overlap(real)
            if clash is not None:
                raise InputError(
                    f"{item.batch.runs[number].remote_output_path!r} {clash} of a queued or "
                    "running batch (cancel it first)",
                    source=item.source,
                    field=f"$.runs[{number}].remote_output_path",
                )


def _check_source(source: str, field: str) -> None:
    relative = not source.startswith("/") and "://" not in source
    if relative or CONTROL_CHARACTERS.intersection(source):
        raise InputError(
            f"{source!r:.200} is not an absolute path or URL on one line",
            source="submit",
            field=field,
        )


def admit(batch: Batch, source: str) -> None:
    """Raise InputError naming ``source`` and the field if ``batch`` (resolved) would
    be refused by ``saturn batch``; normalizes its paths as resolving does."""
    paths = [("$.remote_output_path", batch.remote_output_path)]
    paths.extend(
        (f"$.runs[{index}].remote_output_path", run.remote_output_path)
        for index, run in enumerate(batch.runs)
    )
    for field, path in paths:
        if path is None or (not path.startswith("/") and "://" not in path):
            raise InputError(
                f"{path!r:.200} is not absolute; a submitted batch is resolved (every output "
                "path absolute)",
                source=source,
                field=field,
            )
    resolve_batch(batch, source)
