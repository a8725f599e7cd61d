"""``KubernetesExecutor``: one Indexed Job per sweep run, pods running ``saturn batch``.

``saturn run`` creates, through ``kubernetes_asyncio``: the Secret with the batch files
(or uploads them under the sweep's S3 prefix when they are too large) and the Secret with
the executor's ``env``, the Job, and then makes the Job the Secrets' owner so all go
together. ``collect`` follows the
Job's status (completed and failed indexes) and the failed pods' exit codes, and reads
outputs from S3. ``terminate`` deletes the Job with foreground propagation: Kubernetes
sends the pods SIGTERM, and ``saturn batch`` stops its runs (TERM, then KILL after the
grace) before the pod's termination grace period ends.

One ApiClient serves the executor's life: the kubeconfig is read when it is first
needed, and the client closes with the executor.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Awaitable, Iterable, Iterator
from typing import Any, TypeVar

import anyio
import yaml

from saturn_async.exceptions import ExecutorError, InputError, MissingExtraError
from saturn_async.executors.abc import Executor, Outstanding
from saturn_async.executors.jobs import WorkerJob
from saturn_async.executors.kubernetes.manifests import (
    KubernetesConfig,
    PodCommand,
    encoded_batches,
    fits_secret,
    job,
    job_name,
    secrets,
)
from saturn_async.spec.models import Batch
from saturn_async.spec.paths import is_remote
from saturn_async.storage import storage_for
from saturn_async.sweep.state import SweepRecord

try:
    import aiohttp
    from kubernetes_asyncio import client, config
    from kubernetes_asyncio.client.exceptions import ApiException
    from kubernetes_asyncio.config.config_exception import ConfigException
except ImportError as exc:
    raise MissingExtraError("KubernetesExecutor", "kubernetes") from exc

# Its warnings ("Config not found") repeat the ConfigException this module reports as one line.
logging.getLogger("kubernetes_asyncio.config.kube_config").setLevel(logging.ERROR)
T = TypeVar("T")
# The Job's status is read at most this often (the API server is shared).
_STATUS_INTERVAL = 5.0
# Batch files uploaded at once when they go through S3.
_UPLOADS = 16


class KubernetesExecutor(Executor):
    Config = KubernetesConfig

    def __init__(self, config: Any, record: SweepRecord) -> None:
        super().__init__(config, record)
        self.job_name = job_name(record.name, record.created)
        self._status: tuple[float, Outstanding] | None = None
        self._api_client: Any = None

    @property
    def detaches(self) -> bool:
        return True

    def check(self) -> None:
        if not is_remote(self.record.results_root):
            raise InputError(
                "KubernetesExecutor needs results on S3 (class_spec: S3): pods write there",
                source=self.record.source,
                field="$.results.class_spec",
            )

    async def slot_groups(self, nprocs: int) -> int:
        return self.config.max_pods  # type: ignore[no-any-return]

    def _batches_url(self, files: dict[str, str]) -> str | None:
        """Where pods read batch files: None for the Secret, else an S3 prefix."""
        via = self.config.batches_via
        if via in ("secret", "configmap") or (via == "auto" and fits_secret(files)):
            if not fits_secret(files):
                raise InputError(
                    "the batch files are too large for a Kubernetes Secret (1 MB); use "
                    "batches_via: s3 or auto",
                    source=self.record.source,
                    field="$.executor.batches_via",
                )
            return None
        return f"{self.record.results_root}/.saturn-batches/{self.job_name}"

    def manifests(
        self, job_: WorkerJob, batches: list[Batch], files: dict[str, str], url: str | None
    ) -> list[dict[str, Any]]:
        """The objects ``dispatch`` creates, in order, for the batch ``files`` and their
        S3 prefix ``url`` (None: they go in a Secret)."""
        command = PodCommand(
            grace=job_.grace,
            log_chunk_minutes=job_.log_chunk_seconds / 60,
            submitted=job_.submitted,
        )
        the_job = job(
            self.config,
            sweep=self.record.name,
            created=self.record.created,
            batches=batches,
            command=command,
            batches_url=url,
        )
        return [*secrets(self.config, self.job_name, None if url else files), the_job]

    def describe(self, job_: WorkerJob, batches: Iterable[Batch]) -> Iterator[str]:
        held = list(batches)
        files = encoded_batches(held)
        url = self._batches_url(files)
        objects = self.manifests(job_, held, files, url)
        note = f"# batch files go to {url}/ (not uploaded by --dry-run)\n" if url else ""
        yield note + yaml.safe_dump_all(objects, sort_keys=False)

    async def run(self, job_: WorkerJob, batches: Iterable[Batch]) -> None:
        held = list(batches)
        files = encoded_batches(held)
        url = self._batches_url(files)
        objects = self.manifests(job_, held, files, url)
        if url is not None:
            await _upload(url, files)
        await self._create(objects)

    async def _create(self, objects: list[dict[str, Any]]) -> None:
        namespace = self.config.namespace
        api = await self._api()
        # Any: the typed API wants model objects; plain manifests serialize the same.
        core: Any = client.CoreV1Api(api)
        batch: Any = client.BatchV1Api(api)
        *owned, manifest = objects
        for item in owned:
            await self._call(
                f"create Secret {item['metadata']['name']}",
                core.create_namespaced_secret(namespace, item),
            )
        created = await self._call(
            f"create Job {self.job_name}", batch.create_namespaced_job(namespace, manifest)
        )
        owner = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": self.job_name,
            "uid": created.metadata.uid,
        }
        for item in owned:
            name = item["metadata"]["name"]
            patch = {"metadata": {"ownerReferences": [owner]}}
            await self._call(
                f"make Job {self.job_name} the owner of Secret {name}",
                core.patch_namespaced_secret(name, namespace, patch),
            )

    async def outstanding(self) -> Outstanding:
        now = time.monotonic()
        if self._status is None or now - self._status[0] >= _STATUS_INTERVAL:
            self._status = (now, await self._read_status())
        return self._status[1]

    async def _read_status(self) -> Outstanding:
        namespace = self.config.namespace
        api = await self._api()
        batch = client.BatchV1Api(api)
        try:
            found = await batch.read_namespaced_job(self.job_name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return Outstanding(0, [f"the Job {namespace}/{self.job_name} is gone"])
            raise self._error(f"read Job {self.job_name}", exc) from exc
        except aiohttp.ClientError as exc:
            raise self._error(f"read Job {self.job_name}", exc) from exc
        status = found.status
        failed = index_set(status.failed_indexes)
        done = len(index_set(status.completed_indexes) | failed)
        finished = any(
            c.type in ("Complete", "Failed") and c.status == "True" for c in status.conditions or []
        )
        errors = [
            f"Job {self.job_name} failed: {c.reason}: {c.message}"
            for c in status.conditions or []
            if c.type == "Failed" and c.status == "True"
        ]
        if failed or errors:
            errors += await self._pod_failures(client.CoreV1Api(api))
        left = 0 if finished else max(0, found.spec.completions - done)
        return Outstanding(left, errors)

    async def _pod_failures(self, core: Any) -> list[str]:
        """One line per failed pod: its batch index, and how its container ended."""
        selector = f"batch.kubernetes.io/job-name={self.job_name}"
        pods: Any = await self._call(
            f"list the pods of Job {self.job_name}",
            core.list_namespaced_pod(self.config.namespace, label_selector=selector),
        )
        lines = []
        for pod in pods.items:
            if pod.status.phase != "Failed":
                continue
            index = (pod.metadata.annotations or {}).get(
                "batch.kubernetes.io/job-completion-index", "?"
            )
            ended = [
                s.state.terminated
                for s in pod.status.container_statuses or []
                if s.state is not None and s.state.terminated is not None
            ]
            how = ", ".join(f"{t.reason} (exit code {t.exit_code})" for t in ended)
            lines.append(
                f"batch {index}: pod {pod.metadata.name} failed: {how or pod.status.reason}"
            )
        return lines

    async def terminate(self) -> None:
        batch = client.BatchV1Api(await self._api())
        try:
            await batch.delete_namespaced_job(
                self.job_name,
                self.config.namespace,
                body=client.V1DeleteOptions(propagation_policy="Foreground"),
            )
        except ApiException as exc:
            if exc.status != 404:  # already gone: nothing left to stop
                raise self._error(f"delete Job {self.job_name}", exc) from exc
        except aiohttp.ClientError as exc:
            raise self._error(f"delete Job {self.job_name}", exc) from exc
        self._status = None

    async def aclose(self) -> None:
        if self._api_client is not None:
            api, self._api_client = self._api_client, None
            await api.close()

    async def _api(self) -> Any:
        """The executor's ApiClient, made on first use from the kubeconfig (or the
        service account, in a pod)."""
        if self._api_client is None:
            self._api_client = client.ApiClient(await self._configuration())
        return self._api_client

    async def _configuration(self) -> Any:
        configuration = client.Configuration()
        try:
            if self.config.kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ:
                # Reads the service account's token and CA files: off the loop.
                await anyio.to_thread.run_sync(
                    functools.partial(
                        config.load_incluster_config, client_configuration=configuration
                    )
                )
            else:
                await config.load_kube_config(
                    config_file=self.config.kubeconfig,
                    context=self.config.context,
                    client_configuration=configuration,
                    persist_config=False,
                )
        except (ConfigException, OSError) as exc:
            raise InputError(
                f"no usable Kubernetes configuration: {exc}",
                source=self.record.source,
                field="$.executor.kubeconfig",
            ) from exc
        return configuration

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except (ApiException, aiohttp.ClientError) as exc:
            raise self._error(what, exc) from exc

    def _error(self, what: str, exc: Exception) -> ExecutorError:
        where = f"namespace {self.config.namespace}"
        if isinstance(exc, ApiException):
            return ExecutorError(f"Kubernetes: {what} in {where}: {exc.status} {exc.reason}")
        return ExecutorError(f"Kubernetes: {what} in {where}: {exc}")


def index_set(indexes: str | None) -> set[int]:
    """The indexes of a Job status field such as ``"0-2,5"``."""
    found: set[int] = set()
    for part in (indexes or "").split(","):
        if part:
            first, _, last = part.partition("-")
            found.update(range(int(first), int(last or first) + 1))
    return found


async def _upload(url: str, files: dict[str, str]) -> None:
    limiter = anyio.CapacityLimiter(_UPLOADS)
    async with storage_for(url) as storage:

        async def put(name: str, text: str) -> None:
            async with limiter:
                await storage.put(f"{url}/{name}", text.encode())

        async with anyio.create_task_group() as tg:
            for name, text in files.items():
                tg.start_soon(put, name, text)
