"""The Kubernetes objects of a sweep: one Indexed Job, and the Secrets it owns.

Pure functions of the executor's config and the sweep, so ``saturn run --dry-run`` prints
exactly what ``saturn run`` creates. Pod ``i`` runs ``saturn batch`` on batch ``i``
(``$JOB_COMPLETION_INDEX``), read from the Secret ``<job>-batches`` mounted in the pod or
from the sweep's S3 prefix when the batches are too large for it (docs/executors.md).
Batch files carry the runs' ``env`` (tokens, often), and the executor's ``env`` goes in
the Secret ``<job>-env`` (``envFrom``): neither is ever in a ConfigMap or the Job spec.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import shlex
from typing import Any, Literal

import msgspec

from saturn_async.spec.models import AtLeastOne, Batch, Count
from saturn_async.supervisor.gpu_devices import engine_gpus

SECRET_LIMIT = 1_000_000
"""Bytes of batch files a Secret may carry (the API server's limit is 1 MiB in all)."""
BATCHES_MOUNT = "/etc/saturn-async/batches"
STAGING_MOUNT = "/var/lib/saturn-async/staging"
CONTAINER = "saturn"
# Beyond the runs' grace: time for `saturn batch` to write their statuses after SIGKILL.
_TERMINATION_MARGIN = 30
# What fails a pod: `saturn batch` exits 2 on bad input, 143 when terminated; failed runs
# are recorded in their outputs and do not fail it (--failed-runs-exit-zero).
_EXIT_BAD_INPUT = 2
_GPU_RESOURCE = "nvidia.com/gpu"


class KubernetesConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    class_spec: str
    image: str
    """An image with ``saturn_async[s3]`` installed (``saturn`` on its PATH)."""
    namespace: str = "default"
    max_pods: AtLeastOne = 10
    """The Job's parallelism: pods (batches) running at once."""
    service_account: str | None = None
    resources: dict[str, str | int | float] = msgspec.field(default_factory=dict)
    """Per pod: ``cpu`` (default the batch's nprocs), ``memory``, ``nvidia.com/gpu``
    (default what the runs ask for: ``nprocs`` times the largest ``gpus_per_run``)..."""
    node_selector: dict[str, str] = msgspec.field(default_factory=dict)
    tolerations: list[dict[str, Any]] = msgspec.field(default_factory=list)
    env: dict[str, str] = msgspec.field(default_factory=dict)
    env_from_secrets: list[str] = msgspec.field(default_factory=list)
    """Secrets whose keys become environment variables (S3 credentials, say)."""
    backoff_limit_per_index: Count | None = None
    """Pod-level retries of each batch; a retried pod skips runs that succeeded."""
    ttl_seconds_after_finished: Count | None = None
    batches_via: Literal["auto", "secret", "configmap", "s3"] = "auto"
    """``secret``: in the Secret ``<job>-batches`` (``configmap``, the old name, means the
    same); ``s3``: under the sweep's S3 prefix; ``auto``: the Secret when they fit."""
    kubeconfig: str | None = None
    """Default ``$KUBECONFIG`` or ``~/.kube/config``; in a pod, the in-cluster config."""
    context: str | None = None


class PodCommand(msgspec.Struct, kw_only=True, frozen=True):
    """How a pod runs its batch: the ``saturn batch`` options of the sweep."""

    grace: float
    log_chunk_minutes: float
    submitted: str | None = None
    """The sweep's submission time: the runs' ``submitted`` event and the stamp of the
    outcome summaries the client reads (docs/storage.md)."""


def job_name(sweep: str, created: str) -> str:
    """A DNS-1123 label of at most 63 characters, unique per run of a sweep."""
    digest = hashlib.sha256(f"{sweep}\0{created}".encode()).hexdigest()[:8]
    stem = re.sub(r"[^a-z0-9-]+", "-", sweep.lower()).strip("-")[: 63 - len("saturn--") - 8]
    return f"saturn-{stem.rstrip('-')}-{digest}" if stem else f"saturn-{digest}"


def label_value(value: str) -> str:
    """``value`` made a valid label value (63 characters of ``[A-Za-z0-9._-]``, alphanumeric
    at both ends); the annotation keeps the exact name."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", value)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)


def encoded_batches(batches: list[Batch]) -> dict[str, str]:
    """The batch files, keyed ``<index>.json``."""
    return {f"{i}.json": msgspec.json.encode(b).decode() for i, b in enumerate(batches)}


def fits_secret(files: dict[str, str]) -> bool:
    return sum(len(k) + len(v.encode()) for k, v in files.items()) <= SECRET_LIMIT


def secrets(
    config: KubernetesConfig, name: str, files: dict[str, str] | None
) -> list[dict[str, Any]]:
    """The Secrets of Job ``name``: ``<name>-batches`` (the batch ``files``, unless they
    go through S3) and ``<name>-env`` (the executor's ``env``, if any)."""
    found = []
    if files is not None:
        found.append(_secret(config, f"{name}-batches", files))
    if config.env:
        found.append(_secret(config, f"{name}-env", config.env))
    return found


def _secret(config: KubernetesConfig, name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": config.namespace},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def job(
    config: KubernetesConfig,
    *,
    sweep: str,
    created: str,
    batches: list[Batch],
    command: PodCommand,
    batches_url: str | None,
) -> dict[str, Any]:
    """The Indexed Job; ``batches_url`` is the S3 prefix of the batch files, or None when
    they come from the Secret."""
    name = job_name(sweep, created)
    labels = {"app.kubernetes.io/name": "saturn-async", "saturn-async/sweep": label_value(sweep)}
    source = batches_url if batches_url is not None else BATCHES_MOUNT
    volumes: list[dict[str, Any]] = [{"name": "staging", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "staging", "mountPath": STAGING_MOUNT}]
    if batches_url is None:
        volumes.append({"name": "batches", "secret": {"secretName": f"{name}-batches"}})
        mounts.append({"name": "batches", "mountPath": BATCHES_MOUNT, "readOnly": True})
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": config.image,
        "command": ["sh", "-c", _script(command, source)],
        "resources": _resources(
            config, max(b.nprocs or 1 for b in batches), max(engine_gpus(b) for b in batches)
        ),
        "volumeMounts": mounts,
    }
    # The last source wins: the executor's env over env_from_secrets, as before.
    env_from = [*config.env_from_secrets, *([f"{name}-env"] if config.env else [])]
    if env_from:
        container["envFrom"] = [{"secretRef": {"name": s}} for s in env_from]
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        # The pause container is PID 1: it reaps runs' orphaned grandchildren.
        "shareProcessNamespace": True,
        "terminationGracePeriodSeconds": math.ceil(command.grace) + _TERMINATION_MARGIN,
        "containers": [container],
        "volumes": volumes,
    }
    if config.service_account is not None:
        pod["serviceAccountName"] = config.service_account
    if config.node_selector:
        pod["nodeSelector"] = config.node_selector
    if config.tolerations:
        pod["tolerations"] = config.tolerations
    spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": len(batches),
        "parallelism": min(config.max_pods, len(batches)),
        "template": {"metadata": {"labels": labels}, "spec": pod},
    }
    if config.backoff_limit_per_index is None:
        spec["backoffLimit"] = 0
    else:
        spec["backoffLimitPerIndex"] = config.backoff_limit_per_index
        spec["podFailurePolicy"] = {
            "rules": [
                {
                    "action": "FailIndex",
                    "onExitCodes": {
                        "containerName": CONTAINER,
                        "operator": "In",
                        "values": [_EXIT_BAD_INPUT],
                    },
                },
                {
                    "action": "Ignore",
                    "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                },
            ]
        }
    if config.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = config.ttl_seconds_after_finished
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": config.namespace,
            "labels": labels,
            "annotations": {"saturn-async/sweep": sweep, "saturn-async/created": created},
        },
        "spec": spec,
    }


def _script(command: PodCommand, source: str) -> str:
    batch = f'{shlex.quote(source)}/"${{JOB_COMPLETION_INDEX}}.json"'
    options = [
        "-q",
        "--skip-completed",
        "--failed-runs-exit-zero",
        f"--grace={command.grace:g}",
        f"--log-chunk-minutes={command.log_chunk_minutes:g}",
        # A directory saturn creates 0700 inside the emptyDir (which is 0777).
        f"--staging-dir={STAGING_MOUNT}/runs",
    ]
    if command.submitted is not None:
        options.append(f"--submitted={command.submitted}")
    # exec: the kubelet's SIGTERM must reach saturn batch, not a shell.
    return f"exec saturn batch {' '.join(options)} {batch}"


def _resources(config: KubernetesConfig, nprocs: int, gpus: int) -> dict[str, Any]:
    """Requests (cpu defaults to nprocs, ``nvidia.com/gpu`` to the GPUs the runs ask
    for); memory and extended resources are limits too."""
    requests: dict[str, str] = {"cpu": str(nprocs)}
    if gpus:
        requests[_GPU_RESOURCE] = str(gpus)
    requests.update({k: str(v) for k, v in config.resources.items()})
    limits = {k: v for k, v in requests.items() if k != "cpu"}
    return {"requests": requests, **({"limits": limits} if limits else {})}
