"""An index of the output paths of resolved batches, to find a path that meets one.

Local paths are compared as real paths (``spec.paths.real_output_paths``: each batch
root resolved once), ``s3://`` URLs as normalized. A path meets an indexed one when it
is it, lies inside it or holds it.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence

from saturn_async.spec.models import Batch
from saturn_async.spec.paths import RESERVED, is_remote, real_output_paths


class OutputIndex:
    """The real output paths of all runs of ``batches`` and each local root's reserved
    directory."""

    def __init__(self, batches: Sequence[Batch]) -> None:
        self.what: dict[str, str] = {}
        for batch in batches:
            root = batch.remote_output_path
            if root is not None and not is_remote(root):
                self.what[os.path.join(os.path.realpath(root), RESERVED)] = (
                    f"saturn's reserved {RESERVED}/"
                )
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
