"""One contract for every storage backend, run against the local filesystem and real S3."""

from __future__ import annotations

import base64
import os
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from conftest import FaultProxy
from saturn_async.exceptions import StorageError
from saturn_async.storage import Storage, StoredObject, storage_for
from saturn_async.storage.s3 import MULTIPART_THRESHOLD, PART_SIZE, S3Storage


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    bucket: str = request.getfixturevalue("s3")
    return f"{bucket}/store"


def using(root: str, body: Callable[[Storage], Awaitable[None]]) -> None:
    async def main() -> None:
        async with storage_for(root) as storage:
            await body(storage)

    anyio.run(main)


def test_put_get_replace_and_missing(root: str) -> None:
    async def body(storage: Storage) -> None:
        assert await storage.get(f"{root}/a/b") is None
        await storage.put(f"{root}/a/b", b"one")
        assert await storage.get(f"{root}/a/b") == b"one"
        await storage.put(f"{root}/a/b", b"two!")
        assert await storage.get(f"{root}/a/b") == b"two!"
        await storage.put(f"{root}/empty", b"")
        assert await storage.get(f"{root}/empty") == b""

    using(root, body)


def test_list_is_recursive_sorted_and_relative(root: str) -> None:
    async def body(storage: Storage) -> None:
        assert await storage.list(f"{root}/nothing") == []
        for name in ("run/stdout/000001", "run/stdout/000000", "run/status_code", "other/x"):
            await storage.put(f"{root}/{name}", name.encode())
        listed = await storage.list(f"{root}/run")
        assert listed == [
            StoredObject("status_code", len("run/status_code")),
            StoredObject("stdout/000000", len("run/stdout/000000")),
            StoredObject("stdout/000001", len("run/stdout/000001")),
        ]

    using(root, body)


def test_list_pages_through_more_than_a_thousand(root: str) -> None:
    async def body(storage: Storage) -> None:
        async with anyio.create_task_group() as tg:
            for i in range(1050):
                tg.start_soon(storage.put, f"{root}/many/{i:05d}", b"x")
        listed = await storage.list(f"{root}/many")
        assert [o.name for o in listed] == [f"{i:05d}" for i in range(1050)]

    using(root, body)


@pytest.mark.parametrize("size", [0, 1000, MULTIPART_THRESHOLD + 3 * 2**20 + 7])
def test_put_file_small_and_multipart(root: str, tmp_path: Path, size: int) -> None:
    source = tmp_path / "source.bin"
    data = os.urandom(size)
    source.write_bytes(data)

    async def body(storage: Storage) -> None:
        await storage.put_file(f"{root}/results/file.bin", str(source))
        assert await storage.get(f"{root}/results/file.bin") == data

    using(root, body)


def test_files_carry_their_crc32_and_multipart_the_composite(s3: str, tmp_path: Path) -> None:
    """Files go up with their CRC32, and multipart parts each with theirs, as `aws s3 cp`
    sends them: S3 checks every part and keeps the CRC32 of the parts' CRC32s (without the
    part checksums it would fall back to computing a full-object CRC)."""

    def crc32(data: bytes) -> bytes:
        return zlib.crc32(data).to_bytes(4, "big")

    small, big = os.urandom(1000), os.urandom(MULTIPART_THRESHOLD + 1)
    (tmp_path / "small.bin").write_bytes(small)
    (tmp_path / "big.bin").write_bytes(big)
    part_crcs = b"".join(crc32(big[i : i + PART_SIZE]) for i in range(0, len(big), PART_SIZE))
    bucket = s3.removeprefix("s3://")

    async def body(storage: Storage) -> None:
        assert isinstance(storage, S3Storage)
        heads = {}
        for name in ("small.bin", "big.bin"):
            await storage.put_file(f"{s3}/{name}", str(tmp_path / name))
            heads[name] = await storage._client.head_object(
                Bucket=bucket, Key=name, ChecksumMode="ENABLED"
            )
        assert heads["small.bin"]["ChecksumCRC32"] == base64.b64encode(crc32(small)).decode()
        assert heads["big.bin"]["ETag"].endswith('-3"')
        # S3 appends "-3" (the part count) to a composite checksum; moto does not.
        composite = heads["big.bin"].get("ChecksumCRC32", "").split("-")[0]
        assert composite == base64.b64encode(crc32(part_crcs)).decode()
        assert await storage.get(f"{s3}/big.bin") == big

    using(s3, body)


def test_move(root: str) -> None:
    async def body(storage: Storage) -> None:
        await storage.put(f"{root}/r/stdout/000000", b"attempt one")
        await storage.move(f"{root}/r/stdout/000000", f"{root}/r/stdout.1/000000")
        assert await storage.get(f"{root}/r/stdout/000000") is None
        assert await storage.get(f"{root}/r/stdout.1/000000") == b"attempt one"

    using(root, body)


def test_delete_below_removes_only_what_lies_below(root: str) -> None:
    async def body(storage: Storage) -> None:
        for name in ("r/log/000000", "r/log/000001", "r/log.1/000000", "r/log_x"):
            await storage.put(f"{root}/{name}", b"x")
        await storage.delete_below(f"{root}/r/log")
        assert [o.name for o in await storage.list(f"{root}/r")] == ["log.1/000000", "log_x"]
        await storage.delete_below(f"{root}/r/nothing")  # nothing there: no error

    using(root, body)


def test_move_below_moves_only_what_lies_below(root: str) -> None:
    async def body(storage: Storage) -> None:
        for name in ("r/log/000000", "r/log/000001", "r/log_x"):
            await storage.put(f"{root}/{name}", name.encode())
        await storage.move_below(f"{root}/r/log", f"{root}/r/log.1")
        listed = [o.name for o in await storage.list(f"{root}/r")]
        assert listed == ["log.1/000000", "log.1/000001", "log_x"]
        assert await storage.get(f"{root}/r/log.1/000001") == b"r/log/000001"
        await storage.move_below(f"{root}/r/nothing", f"{root}/r/nothing.1")  # no error

    using(root, body)


def test_check_accepts_a_writable_location(root: str) -> None:
    async def body(storage: Storage) -> None:
        await storage.check(f"{root}/somewhere")

    using(root, body)


def test_check_names_a_missing_bucket(s3: str) -> None:
    async def body(storage: Storage) -> None:
        with pytest.raises(StorageError) as caught:
            await storage.check("s3://no-such-bucket-here/x")
        assert str(caught.value) == "s3://no-such-bucket-here: HeadBucket: no such bucket"

    using(s3, body)


def test_check_names_an_unwritable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    async def body(storage: Storage) -> None:
        with pytest.raises(StorageError, match=r"file/sub: mkdir: Not a directory"):
            await storage.check(str(blocker / "sub"))

    using(str(tmp_path), body)


@pytest.mark.parametrize("mode", ["503", "reset"])
def test_transient_faults_are_retried(s3: str, fault_proxy: FaultProxy, mode: str) -> None:
    fault_proxy.set(mode, rate=0.4)

    async def body(storage: Storage) -> None:
        for i in range(15):
            await storage.put(f"{s3}/f/{i}", b"%d" % i)
        assert [o.name for o in await storage.list(f"{s3}/f")] == sorted(str(i) for i in range(15))
        for i in range(15):
            assert await storage.get(f"{s3}/f/{i}") == b"%d" % i

    using(s3, body)
    counts = fault_proxy.counts()
    assert counts["faulted"] > 0
    assert counts["forwarded"] >= 31


def test_storage_down_past_the_deadline_is_a_storage_error(
    s3: str, fault_proxy: FaultProxy
) -> None:
    fault_proxy.set("down")

    async def main() -> None:
        async with S3Storage(deadline=1.0) as storage:
            with pytest.raises(StorageError, match=r"PutObject: still failing after 1 s"):
                await storage.put(f"{s3}/x", b"lost?")

    anyio.run(main)
