"""KubernetesExecutor: ``client`` (the executor, through kubernetes_asyncio) and
``manifests`` (the Job and Secrets it creates, as pure functions)."""
