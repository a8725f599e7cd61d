"""``saturn logs`` streams: a log far larger than its memory bound prints byte for byte.

A wrapper process runs ``saturn logs`` as its only child, hashes what it prints, and
reports the child's peak RSS (``ru_maxrss`` of its children, the kernel's VmHWM).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from conftest import CLI
from saturn_async.storage.s3 import S3Storage

MiB = 1 << 20
PEAK_RSS_LIMIT = 128 * MiB
"""Well above saturn's own footprint (measured: 35 MB for a local log, 82 MB with the S3
client), well below the logs printed here (reading them whole peaked at 237 and 317 MB)."""

MEASURE = """
import hashlib, json, resource, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
digest, size = hashlib.sha256(), 0
for piece in iter(lambda: child.stdout.read(1 << 20), b""):
    digest.update(piece)
    size += len(piece)
child.wait()
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"code": child.returncode, "size": size, "sha256": digest.hexdigest(),
                  "peak": peak}))
"""


def measured(*args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, *CLI, "logs", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def pattern(size: int) -> tuple[list[bytes], str]:
    """``size`` bytes as 1 MiB pieces that differ from each other, and their digest."""
    block = os.urandom(MiB)
    pieces = [block[i % MiB :] + block[: i % MiB] for i in range(0, size // MiB * 7919, 7919)]
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece)
    return pieces, digest.hexdigest()


@dataclass
class LocalCase:
    name: str
    args: list[str]


LOCAL_CASES = [LocalCase("plain", []), LocalCase("--follow", ["--follow"])]


@pytest.mark.parametrize("case", LOCAL_CASES, ids=[c.name for c in LOCAL_CASES])
def test_a_200_mb_local_log_streams(case: LocalCase, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    pieces, digest = pattern(200 * MiB)
    with (run / "stdout").open("wb") as log:
        for piece in pieces:
            log.write(piece)
    (run / "status_code").write_text("0\n")  # finished: --follow ends after the last byte
    result = measured(*case.args, str(run))
    assert result["code"] == 0
    assert (result["size"], result["sha256"]) == (200 * MiB, digest)
    assert isinstance(result["peak"], int) and result["peak"] < PEAK_RSS_LIMIT, result


def test_a_large_s3_log_streams_chunk_by_chunk(s3: str) -> None:
    pieces, digest = pattern(150 * MiB)
    run = f"{s3}/big/0"

    async def upload(pieces: list[bytes]) -> None:
        async with S3Storage() as storage:
            # One 120 MiB chunk (a run that printed that much in one chunk interval),
            # then three small ones.
            await storage.put(f"{run}/stdout/000000", b"".join(pieces[:120]))
            for index, start in enumerate(range(120, 150, 10), start=1):
                await storage.put(f"{run}/stdout/{index:06d}", b"".join(pieces[start : start + 10]))
            await storage.put(f"{run}/status_code", b"0\n")

    anyio.run(upload, pieces)
    del pieces  # 150 MB this process no longer needs
    for args in ([], ["--follow"]):
        result = measured(*args, run)
        assert result["code"] == 0
        assert (result["size"], result["sha256"]) == (150 * MiB, digest)
        assert isinstance(result["peak"], int) and result["peak"] < PEAK_RSS_LIMIT, result
