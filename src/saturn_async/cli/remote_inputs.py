"""Reading the ``s3://`` job and batch files a command names, before it decodes them."""

from __future__ import annotations

from saturn_async.spec.paths import is_remote


def remote_inputs(paths: list[str], max_input_size: int | None) -> dict[str, bytes]:
    """The content of each ``s3://`` one of ``paths``, by path; no event loop, and no
    storage imported, when none is remote."""
    if not any(is_remote(path) for path in paths):
        return {}
    import anyio

    from saturn_async.storage.inputs import read_remote_inputs

    return anyio.run(read_remote_inputs, paths, max_input_size)
