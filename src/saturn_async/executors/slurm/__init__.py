"""``SlurmExecutor``: a sweep as one Slurm job array whose task ``i`` runs batch file ``i``
(docs/executors.md). The core (commands, script, array) knows no executor interface;
:mod:`.executor` adapts it."""
