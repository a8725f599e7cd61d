"""Checks of ``local_results_dir``, made before anything starts (docs/security.md).

A run's ``local_results_dir``, unless it is the run's own ``OUTPUT/results``, is a
directory saturn creates for the run and removes once the run's results are saved
(moved into ``results/``, or uploaded). saturn never removes or moves what it did not
create, so the directory must not exist yet, and may not lie inside or hold a run's
output path, a batch root's reserved directory, or another run's ``local_results_dir``.
What breaks a rule is refused with InputError naming the file and
``$.runs[N].local_results_dir`` (exit code 2, nothing started). Containment is
compared on real paths: the parent of ``local_results_dir`` and each batch root are
resolved (``os.path.realpath``) once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from saturn_async.exceptions import InputError
from saturn_async.spec.models import Batch
from saturn_async.spec.overlap import OutputIndex
from saturn_async.spec.paths import is_remote

_RESULTS = "results"  # storage.layout.RESULTS; spec does not import storage


def check_local_results_dirs(
    batches: Sequence[Batch], sources: Sequence[str], live: Sequence[Batch] = ()
) -> None:
    """Raise InputError for the first ``local_results_dir`` that breaks a rule above;
    ``live``: other batches whose output paths it must not meet either (the daemon's).

    Makes each one absolute in place. Costs nothing for runs without one, or with their
    own ``OUTPUT/results`` (what ``split`` writes for local runs).
    """
    protected: OutputIndex | None = None  # built at the first one to check
    claims = _Claims()
    real_parents: dict[str, str] = {}
    for source, batch in zip(sources, batches, strict=True):
        for index, run in enumerate(batch.runs):
            given, output = run.local_results_dir, run.remote_output_path
            assert output is not None, "runs are resolved before they are checked"
            if given is None or (given.rstrip("/") == f"{output}/{_RESULTS}"):
                continue
            field = f"$.runs[{index}].local_results_dir"
            if not given or "\0" in given or is_remote(given):
                raise InputError(
                    "must be a local directory path (without NUL bytes)",
                    source=source,
                    field=field,
                )
            path = run.local_results_dir = os.path.abspath(given)
            if path == f"{output}/{_RESULTS}":  # the run's own, spelled another way
                continue
            if os.path.lexists(path):
                raise InputError(
                    f"{given!r} exists already; saturn creates this directory for the run and "
                    "removes it once the results are saved, so it must not exist (remove it, "
                    "or leave local_results_dir out)",
                    source=source,
                    field=field,
                )
            parent, name = os.path.split(path)
            if parent not in real_parents:
                real_parents[parent] = os.path.realpath(parent)
            real = os.path.join(real_parents[parent], name)
            protected = protected or OutputIndex([*batches, *live])
            clash = protected.overlap(real)
            if clash is not None:
                raise InputError(
                    f"{given!r} {clash}; saturn moves or removes this directory",
                    source=source,
                    field=field,
                )
            claims.claim(real, source, index, field)


class _Claims:
    """The local_results_dirs seen so far, and every directory above them."""

    def __init__(self) -> None:
        self.owners: dict[str, tuple[str, int]] = {}
        self.above: dict[str, tuple[str, int]] = {}

    def claim(self, real: str, source: str, index: int, field: str) -> None:
        """Refuse ``real`` when it is, lies inside or holds another run's; else note it."""
        relation, other = "holds", self.above.get(real)
        ancestors = []
        parent = real
        while other is None:
            if parent in self.owners:
                relation = "is" if parent == real else "lies inside"
                other = self.owners[parent]
                break
            up = os.path.dirname(parent)
            if up == parent:
                break
            parent = up
            ancestors.append(parent)
        if other is not None:
            raise InputError(
                f"{real!r} {relation} the local_results_dir of $.runs[{other[1]}] in {other[0]}",
                source=source,
                field=field,
            )
        self.owners[real] = (source, index)
        for ancestor in ancestors:
            self.above.setdefault(ancestor, (source, index))
