"""DaskExecutor and the ``Dask`` results backend: ``client`` (the executor), ``worker``
(its stop signal and shared slots, on a Dask worker), ``queue`` (the results Queue's
sending end, on any worker) and ``receiver`` (its client end)."""
