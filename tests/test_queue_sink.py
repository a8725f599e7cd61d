"""The worker side of the Dask and Ray results backends: a write-only sink, in front of
the client's real Collector (the channel between them carries messages in this process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from saturn_async.spec.models import Batch, Run
from saturn_async.storage import Sink, Storage
from saturn_async.storage.queue import QueueSink
from saturn_async.supervisor import Supervisor
from saturn_async.sweep.collector import Collector


class CollectingChannel:
    """A channel whose far end is the client's Collector; its finish-marker record is
    what ``finals`` holds (as an engine's record of a dead worker's markers)."""

    def __init__(self, directory: Path, finals: dict[str, bytes]) -> None:
        self.collector = Collector(str(directory))
        self.finals = finals
        self.sent: list[tuple[str, str]] = []
        self.asked: list[str] = []

    async def open(self) -> None:
        return None

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append((message["op"], message["location"]))
        self.collector.apply(message)

    async def final(self, location: str) -> bytes | None:
        self.asked.append(location)
        return self.finals.get(location)

    async def close(self) -> None:
        return None


def supervise(tmp_path: Path, batch: Batch, channel: CollectingChannel, **options: Any) -> Any:
    async def main() -> Any:
        async with QueueSink(channel) as sink:
            supervisor = Supervisor(
                2, sink=sink, staging_dir=str(tmp_path / "staging"), report=print, **options
            )
            return await supervisor.run([batch])

    return anyio.run(main)


def test_a_queue_sink_has_no_read_side():
    assert issubclass(Storage, Sink)
    assert issubclass(QueueSink, Sink)
    assert not issubclass(QueueSink, Storage)
    for read in ("get", "get_range", "list"):
        assert not hasattr(Sink, read)
        assert not hasattr(QueueSink, read)
        assert hasattr(Storage, read)


def test_a_rerun_skips_the_runs_whose_finish_marker_the_channel_carried(tmp_path):
    root = tmp_path / "results"
    runs = [
        Run(cmd=f"touch {tmp_path}/ran{i}; echo run {i}", remote_output_path=f"{root}/t{i}")
        for i in range(3)
    ]
    batch = Batch(nprocs=2, remote_output_path=str(root), runs=runs, layout="sweep")
    channel = CollectingChannel(root, {f"{root}/t0/status": b"success\n"})
    summary = supervise(tmp_path, batch, channel, skip_finished=True)
    assert sorted(channel.asked) == [f"{root}/t{i}/status" for i in range(3)]
    assert (summary.succeeded, summary.skipped) == (2, 1)
    assert not (tmp_path / "ran0").exists()
    assert not [sent for sent in channel.sent if sent[1].startswith(f"{root}/t0/")]
    for i in (1, 2):
        assert (root / f"t{i}" / "status").read_text() == "success\n"
        assert (root / f"t{i}" / "log").read_text() == f"run {i}\n"


def test_a_first_run_asks_the_channel_nothing(tmp_path):
    root = tmp_path / "results"
    batch = Batch(
        nprocs=1, remote_output_path=str(root), layout="sweep",
        runs=[Run(cmd="echo once", remote_output_path=f"{root}/t0")],
    )  # fmt: skip
    channel = CollectingChannel(root, {f"{root}/t0/status": b"success\n"})
    summary = supervise(tmp_path, batch, channel)
    assert channel.asked == []
    assert summary.succeeded == 1
    assert (root / "t0" / "log").read_text() == "once\n"


def test_a_retry_moves_the_failed_attempts_chunks_with_one_message(tmp_path):
    root = tmp_path / "results"
    flag = tmp_path / "failed-once"
    command = f"if [ -e {flag} ]; then echo second; else touch {flag}; echo first; exit 1; fi"
    batch = Batch(
        nprocs=1, remote_output_path=str(root), layout="sweep", retries=1,
        runs=[Run(cmd=command, remote_output_path=f"{root}/t0")],
    )  # fmt: skip
    channel = CollectingChannel(root, {})
    summary = supervise(tmp_path, batch, channel)
    assert summary.succeeded == 1
    moves = [sent for sent in channel.sent if sent[0].startswith("move")]
    assert moves == [("move_below", f"{root}/t0/log.1")]
    assert (root / "t0" / "log.1").read_text() == "first\n"
    assert (root / "t0" / "log").read_text() == "second\n"
    assert (root / "t0" / "status").read_text() == "success\n"


def test_the_collector_moves_chunks_only_between_real_directories(tmp_path):
    root, outside = tmp_path / "results", tmp_path / "outside"
    (root / "t0" / "log").mkdir(parents=True)
    (root / "t0" / "log" / "000000").write_text("chunk\n")
    outside.mkdir()
    (outside / "000000").write_text("not saturn's\n")
    (root / "t1").mkdir()
    (root / "t1" / "log").symlink_to(outside)
    (root / "t0" / "log.2").symlink_to(outside)
    collector = Collector(str(root))
    for source, target in [("t1/log", "t1/log.1"), ("t0/log", "t0/log.2")]:
        collector.apply(
            {"op": "move_below", "location": f"{root}/{target}", "source": f"{root}/{source}"}
        )
    assert sorted(p.name for p in outside.iterdir()) == ["000000"]
    assert (outside / "000000").read_text() == "not saturn's\n"
    assert not (root / "t1" / "log.1").exists()
    assert (root / "t0" / "log" / "000000").read_text() == "chunk\n"
    collector.apply(
        {"op": "move_below", "location": f"{root}/t0/log.1", "source": f"{root}/t0/log"}
    )
    assert (root / "t0" / "log.1" / "000000").read_text() == "chunk\n"
    assert list((root / "t0" / "log").iterdir()) == []
