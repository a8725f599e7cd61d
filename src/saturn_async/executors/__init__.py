"""Executors: how batches reach workers. Chosen by ``executor.class_spec`` (docs/executors.md).

``abc`` is the interface, ``jobs`` what workers are sent, ``worker`` what they run,
``registry`` finds an executor by name; each built-in is a module or package of its own
(``local``, ``futures``, ``dask/``, ``ray/``, ``kubernetes/``, ``slurm/``), imported only
when a sweep names it. This package imports nothing, so importing ``executors.jobs`` on a
worker runs nothing else.
"""
