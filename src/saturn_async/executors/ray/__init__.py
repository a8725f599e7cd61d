"""RayExecutor and the ``Ray`` results backend, by role: ``client`` (the executor),
``actor`` (the detached sweep actor and its batch tasks), ``worker`` (a batch task's stop
signal and results channel) and ``receiver`` (the client's end of that channel)."""

from saturn_async.exceptions import MissingExtraError

try:
    import ray  # noqa: F401 - every module below needs it
except ImportError as exc:
    raise MissingExtraError("RayExecutor", "ray") from exc
