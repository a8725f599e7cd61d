"""``batch``, ``logs``, ``status`` and ``split`` with s3:// outputs, against moto_server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from conftest import CLI, FaultProxy, saturn_without, wait_for
from saturn_async.exceptions import StorageError
from saturn_async.linux import punch_hole
from saturn_async.storage.ledger import LedgerWriter, read_ledger
from saturn_async.storage.s3 import S3Storage

Saturn = Callable[..., subprocess.CompletedProcess[str]]


def objects(prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix`` (relative name -> content)."""

    async def main() -> dict[str, bytes]:
        async with S3Storage() as storage:
            found = {}
            for stored in await storage.list(prefix):
                found[stored.name] = await storage.get(f"{prefix}/{stored.name}") or b""
            return found

    return anyio.run(main)


def s3_job(tmp_path: Path, root: str, runs: list[Any], name: str = "job.json") -> Path:
    path = tmp_path / name
    runs = [r if isinstance(r, dict) else {"cmd": r} for r in runs]
    path.write_text(json.dumps({"nprocs": 2, "remote_output_path": root, "runs": runs}))
    return path


def test_batch_writes_the_layout_to_s3(s3: str, tmp_path: Path, saturn: Saturn) -> None:
    job = s3_job(
        tmp_path,
        f"{s3}/sweep",
        [
            "echo out; echo err >&2; mkdir -p $SATURN_RUN_LOCAL_RESULTS_DIR/sub; "
            "echo r > $SATURN_RUN_LOCAL_RESULTS_DIR/sub/r.txt",
            "exit 3",
        ],
    )
    staging = tmp_path / "staging"
    result = saturn("batch", str(job), "-q", "--staging-dir", str(staging))
    assert result.returncode == 1, result.stderr
    stored = objects(f"{s3}/sweep")
    assert stored["0/stdout/000000"] == b"out\n"
    assert stored["0/stderr/000000"] == b"err\n"
    assert stored["0/results/sub/r.txt"] == b"r\n"
    assert stored["0/status_code"] == b"0\n"
    assert stored["1/status_code"] == b"3\n"
    assert b'"type":"failed"' in stored["1/events"]
    assert not [k for k in stored if k.startswith("1/stdout")]  # nothing printed, nothing shipped
    assert os.listdir(staging) == []  # staged copies are removed once shipped

    logs = saturn("logs", f"{s3}/sweep/0")
    assert (logs.returncode, logs.stdout) == (0, "out\n")
    assert saturn("logs", f"{s3}/sweep/0", "--stream", "stderr").stdout == "err\n"
    status = json.loads(saturn("status", f"{s3}/sweep", "--json").stdout)
    assert (status["succeeded"], status["failed"]) == (1, 1)
    status = json.loads(saturn("status", str(job), "--json").stdout)
    assert (status["succeeded"], status["failed"], status["failed_runs"][0]["cmd"]) == (
        1,
        1,
        "exit 3",
    )


def test_logs_are_shipped_in_chunks_while_the_run_runs(
    s3: str, tmp_path: Path, saturn: Saturn
) -> None:
    flag = tmp_path / "flag"
    job = s3_job(
        tmp_path,
        f"{s3}/live",
        [f"echo first; while [ ! -e {flag} ]; do sleep 0.05; done; echo second"],
    )
    proc = subprocess.Popen(
        [*CLI, "batch", str(job), "-q", "--log-chunk-minutes", "0.01"], cwd=tmp_path
    )
    try:
        follower = subprocess.Popen(
            [*CLI, "logs", f"{s3}/live/0", "--follow"], stdout=subprocess.PIPE, cwd=tmp_path
        )
        chunks = wait_for(lambda: objects(f"{s3}/live/0/stdout"), what="the first chunk")
        assert chunks == {"000000": b"first\n"}
        assert "status_code" not in objects(f"{s3}/live/0")
        flag.touch()
        assert proc.wait(timeout=30) == 0
        out, _ = follower.communicate(timeout=30)
        assert out == b"first\nsecond\n"
        assert objects(f"{s3}/live/0/stdout") == {"000000": b"first\n", "000001": b"second\n"}
    finally:
        proc.kill()
        proc.wait()


def test_failed_attempts_keep_their_logs_apart(s3: str, tmp_path: Path, saturn: Saturn) -> None:
    counter = tmp_path / "count"
    job = s3_job(
        tmp_path,
        f"{s3}/retry",
        [
            {
                "cmd": f"echo try >> {counter}; echo attempt; [ $(wc -l < {counter}) -ge 2 ]",
                "retries": 2,
            }
        ],
    )
    assert saturn("batch", str(job), "-q").returncode == 0
    stored = objects(f"{s3}/retry/0")
    assert stored["stdout.1/000000"] == b"attempt\n"
    assert stored["stdout/000000"] == b"attempt\n"
    assert "stdout.2/000000" not in stored
    assert stored["status_code"] == b"0\n"


def test_skip_completed_reads_the_ledger(s3: str, tmp_path: Path, saturn: Saturn) -> None:
    marker = tmp_path / "ran"
    job = s3_job(tmp_path, f"{s3}/skip", [f"echo x >> {marker}", "exit 1"])
    assert saturn("batch", str(job), "-q").returncode == 1
    assert marker.read_text() == "x\n"
    assert [k for k in objects(f"{s3}/skip") if k.startswith(".saturn/ledger/")]
    assert saturn("batch", str(job), "-q", "--skip-completed").returncode == 1
    assert marker.read_text() == "x\n"  # the succeeded run was not run again

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("type: job\nspec:\n  name: j\n  command: x\n")
    result = saturn("split", str(recipe), str(job), str(tmp_path / "cmds"), "--skip-completed")
    assert result.returncode == 0, result.stderr
    batch = json.loads((tmp_path / "cmds" / "0.json").read_text())
    assert [r["cmd"] for r in batch["runs"]] == ["exit 1"]
    assert batch["runs"][0]["local_results_dir"].startswith("/tmp/")


def test_a_missing_bucket_fails_before_any_run_starts(
    s3: str, tmp_path: Path, saturn: Saturn
) -> None:
    marker = tmp_path / "ran"
    job = s3_job(tmp_path, "s3://no-such-bucket-here/x", [f"touch {marker}"])
    result = saturn("batch", str(job), "-q")
    assert result.returncode == 2
    assert result.stderr == "saturn: error: s3://no-such-bucket-here: HeadBucket: no such bucket\n"
    assert not marker.exists()


def test_s3_without_the_extra_names_it(tmp_path: Path) -> None:
    job = s3_job(tmp_path, "s3://some-bucket/x", ["true"])
    result = saturn_without("aiobotocore", "batch", str(job), "-q")
    assert result.returncode == 2
    assert result.stderr == (
        "saturn: error: s3:// locations needs the extra: pip install 'saturn_async[s3]'\n"
    )


def test_runs_survive_s3_errors_and_an_outage(
    s3: str, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    flag = tmp_path / "flag"
    runs: list[Any] = [f"echo run {i}; echo err {i} >&2" for i in range(6)]
    runs.append(f"echo before; while [ ! -e {flag} ]; do sleep 0.05; done; echo after")
    job = s3_job(tmp_path, f"{s3}/faults", runs)
    fault_proxy.set("503", rate=0.3)
    proc = subprocess.Popen(
        [*CLI, "batch", str(job), "-q", "--log-chunk-minutes", "0.01"], cwd=tmp_path
    )
    try:
        wait_for(lambda: objects(f"{s3}/faults/6/stdout"), what="the long run's first chunk")
        fault_proxy.set("down")
        flag.touch()
        base = fault_proxy.counts()["faulted"]
        wait_for(lambda: fault_proxy.counts()["faulted"] > base + 3, what="requests while down")
        assert proc.poll() is None  # the supervisor waits for S3; the run is not failed
        fault_proxy.set("reset", rate=0.3)
        assert proc.wait(timeout=90) == 0
    finally:
        proc.kill()
        proc.wait()
    fault_proxy.set("ok")
    stored = objects(f"{s3}/faults")
    for i in range(6):
        assert stored[f"{i}/stdout/000000"] == b"run %d\n" % i
        assert stored[f"{i}/stderr/000000"] == b"err %d\n" % i
        assert stored[f"{i}/status_code"] == b"0\n"
    chunks = sorted(k for k in stored if k.startswith("6/stdout/"))
    assert b"".join(stored[k] for k in chunks) == b"before\nafter\n"
    assert stored["6/status_code"] == b"0\n"


def test_a_second_signal_stops_waiting_for_s3_and_keeps_the_outcome(
    s3: str, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """With S3 down, one SIGTERM waits for it (up to the deadline); a second gives up on
    it at once and keeps the outcome in the staging directory, saying where. The exit
    code stays the signal's."""
    started, staging = tmp_path / "started", tmp_path / "staging"
    job = s3_job(
        tmp_path, f"{s3}/stop", [f"echo hello; touch {started}; exec sleep 60", "echo quick"]
    )
    proc = subprocess.Popen(
        [*CLI, "batch", str(job), "-q", "--grace", "1", "--staging-dir", str(staging)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(started.exists, what="the run to start")
        wait_for(lambda: "1/status_code" in objects(f"{s3}/stop"), what="the quick run's end")
        fault_proxy.set("down")
        proc.send_signal(signal.SIGTERM)
        base = fault_proxy.counts()["faulted"]
        wait_for(lambda: fault_proxy.counts()["faulted"] > base + 2, what="retries while down")
        assert proc.poll() is None  # one signal: still waiting for S3
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, stderr
    (kept,) = staging.iterdir()
    assert "retries stopped (" in stderr, stderr
    assert f"kept in {kept}" in stderr
    assert (kept / "stdout").read_bytes() == b"hello\n"
    assert (kept / "status_code").read_text() == "143\n"
    assert '"type":"terminated"' in (kept / "events").read_text()
    # The quick run's ledger segment could not go up either; that is said, not fatal.
    assert "could not write the ledger: s3://saturn-test/stop/.saturn/ledger/" in stderr
    fault_proxy.set("ok")
    assert sorted(objects(f"{s3}/stop")) == [
        "0/.saturn-lease",  # not released: S3 was down (it expires)
        "1/.saturn-lease",
        "1/events",
        "1/status_code",
        "1/stdout/000000",
    ]


def test_a_failed_ledger_flush_keeps_its_records(s3: str, fault_proxy: FaultProxy) -> None:
    root = f"{s3}/ledger"

    async def main() -> None:
        async with S3Storage(deadline=0.3) as storage:
            ledger = LedgerWriter(storage)
            ledger.record(root, f"{root}/a", 0)
            ledger.record(root, f"{root}/b", 0)
            fault_proxy.set("down")
            with pytest.raises(StorageError):
                await ledger.flush()
            ledger.record(root, f"{root}/b", 1)  # newer than the unwritten record
            fault_proxy.set("ok")
            await ledger.flush()
            assert await read_ledger(storage, root) == {f"{root}/a": 0, f"{root}/b": 1}

    anyio.run(main)


def test_punch_hole_frees_shipped_blocks(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(os.urandom(4 * 2**20))
    fd = os.open(path, os.O_RDWR)
    try:
        before = os.fstat(fd).st_blocks
        if not punch_hole(fd, 0, 4 * 2**20):
            pytest.fail("this filesystem cannot punch holes")
        after = os.fstat(fd)
    finally:
        os.close(fd)
    assert after.st_size == 4 * 2**20
    assert after.st_blocks < before / 4


def test_logs_of_an_s3_prefix_holding_nothing_is_an_error(s3: str, saturn) -> None:
    done = saturn("logs", f"{s3}/typo")
    assert done.returncode == 2
    assert done.stderr == f"saturn: error: PATH_OR_URL: no run output at {s3}/typo\n"


def test_command_list_to_s3(s3: str, tmp_path: Path, saturn) -> None:
    (tmp_path / "cmds.txt").write_text("echo a\nexit 4\n")
    result = saturn("batch", "--commands", "cmds.txt", "-o", f"{s3}/sweep", "-q")
    assert result.returncode == 1, result.stderr
    report = json.loads(saturn("status", f"{s3}/sweep", "--json").stdout)
    assert (report["succeeded"], report["failed"]) == (1, 1)
    assert report["failed_runs"][0]["path"] == f"{s3}/sweep/1"
    assert saturn("logs", f"{s3}/sweep/0").stdout == "a\n"
