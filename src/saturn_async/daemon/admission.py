"""Checks on batches that arrive already resolved: on the control socket (from any
client, as any bytes) and from the journal when it is replayed.

They are the checks ``saturn batch`` makes on a file (``resolve_batch``: containment,
duplicates, nesting, and ``spec.check``: what could not be spawned), run again on the
resolved batch, plus what only a resolved batch must satisfy: every output path is
absolute, and the batch's source names a file or URL on one line.
"""

from __future__ import annotations

from saturn_async.daemon.protocol import SubmittedBatch
from saturn_async.exceptions import InputError
from saturn_async.spec.models import Batch
from saturn_async.spec.resolve import resolve_batch

_CONTROL = frozenset(map(chr, [*range(32), 127]))


def check_submitted(submitted: list[SubmittedBatch]) -> None:
    """Raise InputError for the first batch of a submit request that ``saturn batch``
    would refuse, or for two runs of the request that share an output path."""
    owner: dict[str, tuple[str, int]] = {}
    for number, item in enumerate(submitted):
        check_source(item.source, f"$.batches[{number}].source")
        admit(item.batch, item.source)
        for index, run in enumerate(item.batch.runs):
            assert run.remote_output_path is not None
            first = owner.setdefault(run.remote_output_path, (item.source, index))
            if first != (item.source, index):
                raise InputError(
                    f"{run.remote_output_path!r} is also the output path of "
                    f"$.runs[{first[1]}] in {first[0]}",
                    source=item.source,
                    field=f"$.runs[{index}].remote_output_path",
                )


def check_source(source: str, field: str) -> None:
    if (not source.startswith("/") and "://" not in source) or _CONTROL.intersection(source):
        raise InputError(
            f"{source!r} is not an absolute path or URL on one line", source="submit", field=field
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
                f"{path!r} is not absolute; a submitted batch is resolved (every output "
                "path absolute)",
                source=source,
                field=field,
            )
    resolve_batch(batch, source)
