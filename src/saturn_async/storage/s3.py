"""The storage interface over S3 with aiobotocore (extra ``saturn_async[s3]``).

Credentials, region and endpoint come from the standard AWS chain (``AWS_PROFILE``,
``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``, ``AWS_REGION``, instance roles, ...); none
of them is ever printed. Transient failures (5xx, SlowDown, throttling, reset or timed-out
connections) are retried with backoff and jitter until ``deadline``; anything else is a
StorageError at once, naming the bucket and the operation.
"""

from __future__ import annotations

import base64
import contextlib
import os
import zlib
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp
import anyio
import anyio.to_thread
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    ResponseStreamingError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from saturn_async.exceptions import StorageError
from saturn_async.spec.paths import key_problem
from saturn_async.storage.base import Storage, StoredObject
from saturn_async.storage.results_walk import open_regular, read_at
from saturn_async.storage.retry import retry_transient

T = TypeVar("T")

MULTIPART_THRESHOLD = 16 * 2**20
PART_SIZE = 8 * 2**20
CHECKSUM_ALGORITHM = "CRC32"
"""Files go up with their CRC32 (multipart: each part's, and S3 keeps the composite), as
``aws s3 cp`` sends them; computed in the reading thread, not on the event loop."""
_CHECKSUM_FIELD = f"Checksum{CHECKSUM_ALGORITHM}"
_TRANSIENT_CODES = frozenset(
    (
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "RequestLimitExceeded",
    )
)
_CONDITION_FAILED = frozenset(("PreconditionFailed", "412", "ConditionalRequestConflict"))
"""A conditional PUT refused: the object is not as the condition says (409: S3 is
writing it for another conditional request right now)."""
_REASONS = {
    "NoSuchBucket": "no such bucket",
    "AccessDenied": "access denied",
    "InvalidAccessKeyId": "the access key is not valid",
    "SignatureDoesNotMatch": "the secret key does not match",
    "403": "access denied",
    "404": "no such bucket",
}


def read_with_crc32(fd: int, start: int, length: int) -> tuple[bytes, str]:
    """A range of the open file ``fd`` and its CRC32 as S3 writes it (base64 of 4
    big-endian bytes).

    ``zlib.crc32`` releases the GIL, so in a worker thread it runs beside the event loop.
    """
    data = read_at(fd, start, length)
    return data, base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def _open_and_read(path: str) -> tuple[int, int, tuple[bytes, str] | None]:
    """``(fd, size, None)`` for a file to upload as multipart (the caller closes ``fd``);
    a smaller one is read whole with its CRC32, and closed: ``(-1, size, (data, crc))``.

    Raises NotRegularFile for anything but a regular file (see ``open_regular``).
    """
    fd, size = open_regular(path)
    if size > MULTIPART_THRESHOLD:
        return fd, size, None
    try:
        return -1, size, read_with_crc32(fd, 0, size)
    finally:
        os.close(fd)


def _checksum_fields(checksum: str) -> dict[str, str]:
    """A checksum we computed; botocore sends it as is (and naming the algorithm too is
    what makes moto keep it)."""
    return {"ChecksumAlgorithm": CHECKSUM_ALGORITHM, _CHECKSUM_FIELD: checksum}


def split_url(location: str) -> tuple[str, str]:
    """``s3://bucket/key`` as ``(bucket, key)``."""
    bucket, _, key = location.removeprefix("s3://").partition("/")
    return bucket, key


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error.get("Code") in _TRANSIENT_CODES or status >= 500 or status == 429
    return isinstance(
        exc,
        BotoConnectionError
        | HTTPClientError
        | ResponseStreamingError
        | aiohttp.ClientError
        | OSError,
    )


class S3Storage(Storage):
    """Whole objects in S3; ``put_file`` switches to multipart above the threshold."""

    def __init__(self, *, deadline: float = 600.0, concurrency: int = 16) -> None:
        self.deadline = deadline
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._transfers = anyio.CapacityLimiter(concurrency)
        self._concurrency = concurrency
        self._abandon = anyio.Event()

    async def __aenter__(self) -> Self:
        config = AioConfig(
            retries={"total_max_attempts": 1},  # retried here, with a deadline
            connect_timeout=5,
            read_timeout=30,
            max_pool_connections=self._concurrency * 2,
        )
        session = get_session()
        self._client = await self._stack.enter_async_context(
            session.create_client("s3", region_name=os.environ.get("AWS_REGION"), config=config)
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    def stop_retrying(self) -> None:
        self._abandon.set()

    async def _call(self, operation: str, location: str, attempt: Callable[[], Awaitable[T]]) -> T:
        try:
            return await retry_transient(
                attempt, is_transient, self.deadline, abandon=self._abandon
            )
        except NoCredentialsError as exc:
            raise StorageError(location, operation, "no AWS credentials found") from exc
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "?"))
            if code == "404" and operation != "HeadBucket":
                reason = "404 Not Found"  # about the key, not the bucket: a name refused
            else:
                reason = _REASONS.get(code) or f"{code}: {error.get('Message', '')}".strip(": ")
            raise StorageError(location, operation, reason) from exc
        except Exception as exc:
            if is_transient(exc):
                reason = (
                    "retries stopped"
                    if self._abandon.is_set()
                    else f"still failing after {self.deadline:g} s of retries"
                )
                raise StorageError(location, operation, f"{reason} ({type(exc).__name__})") from exc
            raise

    async def check(self, location: str) -> None:
        bucket, _ = split_url(location)
        await self._call(
            "HeadBucket", f"s3://{bucket}", lambda: self._client.head_bucket(Bucket=bucket)
        )

    async def put(self, location: str, data: bytes) -> None:
        await self._put_object(location, data)

    def name_problem(self, location: str) -> str | None:
        return key_problem(split_url(location)[1])

    async def put_file(self, location: str, path: str) -> None:
        fd, size, small = await anyio.to_thread.run_sync(_open_and_read, path)
        if small is not None:
            await self._put_object(location, small[0], **_checksum_fields(small[1]))
            return
        try:
            await self._multipart(location, fd, size)
        finally:
            os.close(fd)

    async def _put_object(self, location: str, body: bytes, **fields: str) -> None:
        bucket, key = split_url(location)
        async with self._transfers:
            await self._call(
                "PutObject",
                location,
                lambda: self._client.put_object(Bucket=bucket, Key=key, Body=body, **fields),
            )

    async def _multipart(self, location: str, fd: int, size: int) -> None:
        bucket, key = split_url(location)
        created = await self._call(
            "CreateMultipartUpload",
            location,
            lambda: self._client.create_multipart_upload(
                Bucket=bucket, Key=key, ChecksumAlgorithm=CHECKSUM_ALGORITHM
            ),
        )
        upload_id = created["UploadId"]
        count = (size + PART_SIZE - 1) // PART_SIZE
        parts: list[dict[str, Any]] = [{} for _ in range(count)]

        async def upload(index: int) -> None:
            async with self._transfers:
                start = index * PART_SIZE
                body, checksum = await anyio.to_thread.run_sync(
                    read_with_crc32, fd, start, min(PART_SIZE, size - start)
                )
                response = await self._call(
                    "UploadPart",
                    location,
                    lambda: self._client.upload_part(
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=index + 1,
                        Body=body,
                        **_checksum_fields(checksum),
                    ),
                )
                parts[index] = {
                    "ETag": response["ETag"],
                    "PartNumber": index + 1,
                    _CHECKSUM_FIELD: checksum,
                }

        try:
            async with anyio.create_task_group() as tg:
                for index in range(count):
                    tg.start_soon(upload, index)
            await self._call(
                "CompleteMultipartUpload",
                location,
                lambda: self._client.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                ),
            )
        except BaseException:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await self._client.abort_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id
                )
            raise

    async def get(self, location: str) -> bytes | None:
        found = await self._get_object(location)
        return None if found is None else found[0]

    async def get_range(self, location: str, start: int, length: int) -> bytes | None:
        found = await self._get_object(location, Range=f"bytes={start}-{start + length - 1}")
        return None if found is None else found[0]

    async def get_tagged(self, location: str) -> tuple[bytes, str] | None:
        """The object's content and ETag, or None when there is no such object."""
        return await self._get_object(location)

    async def put_if(self, location: str, data: bytes, if_match: str | None) -> str | None:
        """Write the object only if there is none (``if_match`` None) or its ETag is still
        ``if_match``; returns the new ETag, or None when that condition does not hold."""
        bucket, key = split_url(location)
        condition = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}

        async def attempt() -> str | None:
            try:
                response = await self._client.put_object(
                    Bucket=bucket, Key=key, Body=data, **condition
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in _CONDITION_FAILED:
                    return None
                raise
            return str(response["ETag"])

        return await self._call("PutObject", location, attempt)

    async def _get_object(self, location: str, **options: str) -> tuple[bytes, str] | None:
        bucket, key = split_url(location)

        async def attempt() -> tuple[bytes, str] | None:
            try:
                response = await self._client.get_object(Bucket=bucket, Key=key, **options)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise
            async with response["Body"] as body:
                data: bytes = await body.read()
                return data, str(response.get("ETag", ""))

        return await self._call("GetObject", location, attempt)

    async def list(self, prefix: str) -> list[StoredObject]:
        bucket, key = split_url(prefix)
        key = f"{key}/" if key else ""
        found: list[StoredObject] = []
        token: str | None = None
        while True:
            kwargs = {"Bucket": bucket, "Prefix": key}
            if token:
                kwargs["ContinuationToken"] = token

            async def attempt(kwargs: dict[str, str] = kwargs) -> dict[str, Any]:
                page: dict[str, Any] = await self._client.list_objects_v2(**kwargs)
                return page

            page = await self._call("ListObjectsV2", prefix, attempt)
            found.extend(
                StoredObject(item["Key"][len(key) :], item["Size"])
                for item in page.get("Contents", [])
            )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return sorted(found, key=lambda o: o.name)

    async def delete(self, location: str) -> None:
        bucket, key = split_url(location)
        await self._call(
            "DeleteObject", location, lambda: self._client.delete_object(Bucket=bucket, Key=key)
        )

    async def move(self, source: str, target: str) -> None:
        source_bucket, source_key = split_url(source)
        bucket, key = split_url(target)
        await self._call(
            "CopyObject",
            target,
            lambda: self._client.copy_object(
                Bucket=bucket, Key=key, CopySource={"Bucket": source_bucket, "Key": source_key}
            ),
        )
        await self.delete(source)
