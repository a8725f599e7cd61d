"""Output paths of resolved batches that meet: those of the batches of one command
(``check_distinct_outputs``), and an index of them to find a path that meets one
(``OutputIndex``).

Local paths are compared as real paths (``spec.paths.real_output_paths``: each batch
root resolved once), ``s3://`` URLs as normalized. A path meets another when it is it,
lies inside it or holds it; a batch root's reserved directory (``ROOT/.saturn``) counts
as an output path.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from typing import NoReturn

from saturn_async.exceptions import InputError
from saturn_async.spec.models import Batch
from saturn_async.spec.paths import RESERVED, real_output_paths, real_root

_RESERVED = f"saturn's reserved {RESERVED}/"


def check_distinct_outputs(named: Sequence[tuple[str, Batch]]) -> None:
    """InputError when a run output path of one of these resolved batches (each with its
    source) is, lies inside or holds another batch's, or its reserved directory; or when
    a batch's root is or lies inside another's run output path or reserved directory.
    Within one batch, resolving has compared its runs already (one root, one real root).

    Linear in the runs: a set of all paths, each walked up only below its own root (not
    at all when each is ``ROOT/NAME``, as ``split`` writes them), the roots up to ``/``.
    Whatever the order of the files, the path reported is the inner one."""
    if len(named) < 2:
        return
    owner: dict[str, tuple[int, int]] = {}
    reals: list[list[str]] = []
    for number, (_, batch) in enumerate(named):
        paths = list(real_output_paths(batch))
        for index, real in enumerate(paths):
            first = owner.setdefault(real, (number, index))
            if first[0] != number:
                _refuse(named, number, index, "is also the output path of", first)
        reals.append(paths)
    roots = [real_root(_root(batch)) for _, batch in named]
    reserved: dict[str, int] = {}
    for number, root in enumerate(roots):
        reserved.setdefault(os.path.join(root, RESERVED), number)
    for number, root in enumerate(roots):
        up = root  # the root, then each directory above it
        while up:
            relation = "is" if up == root else "lies inside"
            if up in owner:
                _refuse(named, number, None, f"{relation} the output path of", owner[up])
            if up in reserved:
                _refuse(named, number, None, f"{relation} {_RESERVED} of", (reserved[up], None))
            up = up.rpartition("/")[0]
    for number, root in enumerate(roots):
        paths, prefix = reals[number], root.rstrip("/") + "/"
        if "".join(paths).count("/") == len(paths) * prefix.count("/"):
            continue  # each is ROOT/NAME: nothing of another batch lies below ROOT above it
        for index, path in enumerate(paths):
            if path in reserved:
                _refuse(named, number, index, f"is {_RESERVED} of", (reserved[path], None))
            up = path.rpartition("/")[0]
            while len(up) > len(root):
                if up in owner:
                    _refuse(named, number, index, "lies inside the output path of", owner[up])
                if up in reserved:
                    _refuse(
                        named, number, index, f"lies inside {_RESERVED} of", (reserved[up], None)
                    )
                up = up.rpartition("/")[0]


def _root(batch: Batch) -> str:
    assert batch.remote_output_path is not None, "batches are resolved before they are compared"
    return batch.remote_output_path


def _refuse(
    named: Sequence[tuple[str, Batch]],
    number: int,
    index: int | None,
    relation: str,
    other: tuple[int, int | None],
) -> NoReturn:
    """Raise the InputError of run ``index`` of batch ``number`` (None: its root) that
    ``relation`` run ``other[1]`` of batch ``other[0]`` (None: its reserved directory)."""
    source, batch = named[number]
    given = _root(batch) if index is None else batch.runs[index].remote_output_path
    field = "$.remote_output_path" if index is None else f"$.runs[{index}].remote_output_path"
    what = named[other[0]][0] if other[1] is None else f"$.runs[{other[1]}] in {named[other[0]][0]}"
    raise InputError(f"{given!r} {relation} {what}", source=source, field=field)


class OutputIndex:
    """The real output paths of all runs of ``batches`` and each root's reserved
    directory."""

    def __init__(self, batches: Sequence[Batch]) -> None:
        self.what: dict[str, str] = {}
        for batch in batches:
            root = batch.remote_output_path
            if root is not None:
                self.what[os.path.join(real_root(root), RESERVED)] = _RESERVED
            for run, real in zip(batch.runs, real_output_paths(batch), strict=True):
                self.what[real] = f"the output path {run.remote_output_path!r}"
        self.sorted = sorted(self.what, key=_components)
        self.keys = [_components(path) for path in self.sorted]

    def overlap(self, path: str) -> str | None:
        """How ``path`` meets an indexed path (is, lies inside or holds it), or None."""
        if not self.what:
            return None
        parent = path
        while True:
            if parent in self.what:
                return f"{'is' if parent == path else 'lies inside'} {self.what[parent]}"
            up = os.path.dirname(parent)
            if up == parent:
                break
            parent = up
        key = _components(path)
        at = bisect.bisect_left(self.keys, key)
        if at < len(self.keys) and self.keys[at][: len(key)] == key:
            return f"holds {self.what[self.sorted[at]]}"
        return None


def _components(path: str) -> list[str]:
    return path.split("/")
