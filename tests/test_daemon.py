"""``saturn daemon`` with ``submit/ps/cancel/drain``: a real daemon process in a temp dir."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import socket
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from conftest import CLI, wait_for
from daemons import Daemon
from saturn_async.daemon import protocol
from saturn_async.storage.layout import decode_events

Saturn = Callable[..., subprocess.CompletedProcess[str]]


def batch_file(path: Path, output: Path | str, runs: list[str], nprocs: int = 2) -> Path:
    path.write_text(
        json.dumps(
            {
                "nprocs": nprocs,
                "remote_output_path": str(output),
                "runs": [{"cmd": c} for c in runs],
            }
        )
    )
    return path


def gated(gate: Path, then: str = "true") -> str:
    """A run that waits until ``gate`` exists, then runs ``then``."""
    return f"while [ ! -e {gate} ]; do sleep 0.02; done; {then}"


def status(run_dir: Path) -> int | None:
    try:
        return int((run_dir / "status_code").read_text())
    except FileNotFoundError:
        return None


def batch_info(daemon: Daemon, batch_id: str) -> protocol.BatchInfo:
    return next(b for b in daemon.ps().batches if b.id == batch_id)


def test_batches_share_the_slots_and_record_every_run(
    daemon: Daemon, tmp_path: Path, saturn: Saturn
) -> None:
    gate = tmp_path / "gate"
    daemon.start("--nprocs", "2")
    slow = batch_file(tmp_path / "slow.json", tmp_path / "slow", [gated(gate)])
    quick = batch_file(
        tmp_path / "quick.json",
        tmp_path / "quick",
        [f"echo out-{i}; echo $SATURN_RUN_LOCAL_RANK > $SATURN_RUN_LOCAL_RESULTS_DIR/rank" for i in range(6)],
    )  # fmt: skip
    result = saturn("submit", str(slow), str(quick), *daemon.address)
    assert result.returncode == 0, result.stderr
    assert [line.split("\t")[:2] for line in result.stdout.splitlines()] == [
        ["b1", "1 runs"],
        ["b2", "6 runs"],
    ]
    # The slow batch holds one slot; the other slot runs all of the quick batch meanwhile.
    wait_for(lambda: batch_info(daemon, "b2").succeeded == 6, what="the quick batch")
    snapshot = daemon.ps()
    assert [r.id for r in snapshot.running] == ["b1.0"]
    assert {(tmp_path / f"quick/{i}/results/rank").read_text() for i in range(6)} == {"1\n"}
    for i in range(6):
        assert status(tmp_path / f"quick/{i}") == 0
        assert (tmp_path / f"quick/{i}/stdout").read_text() == f"out-{i}\n"
    listing = saturn("ps", "--json", *daemon.address)
    assert listing.returncode == 0, listing.stderr
    shown = json.loads(listing.stdout)
    assert shown["state"] == "running" and shown["nprocs"] == 2 and shown["succeeded"] == 6
    assert saturn("ps", *daemon.address).stdout.count("b1.0") == 1
    gate.touch()
    drained = saturn("drain", "--wait", "--timeout", "30", *daemon.address)
    assert drained.returncode == 0, drained.stderr
    assert daemon.wait() == 0
    assert status(tmp_path / "slow/0") == 0
    events = decode_events((tmp_path / "slow/0/events").read_bytes())
    assert [e.type for e in events] == ["submitted", "started", "complete"]


def test_cancel_drops_queued_runs_and_stops_running_ones(
    daemon: Daemon, tmp_path: Path, saturn: Saturn
) -> None:
    daemon.start("--nprocs", "1", "--grace", "1")
    gate = tmp_path / "gate"
    job = batch_file(tmp_path / "job.json", tmp_path / "out", [gated(gate)] * 3)
    assert saturn("submit", str(job), *daemon.address).returncode == 0
    wait_for(lambda: daemon.ps().running, what="the first run")
    one = saturn("cancel", "b1.2", *daemon.address)
    assert one.returncode == 0, one.stderr
    assert "cancelled 1 queued, stopping 0 running" in one.stdout
    whole = saturn("cancel", str(job), *daemon.address)  # the batch, by its file
    assert "cancelled 1 queued, stopping 1 running" in whole.stdout
    wait_for(lambda: status(tmp_path / "out/0") is not None, what="the stopped run's status")
    assert status(tmp_path / "out/0") == 143
    events = decode_events((tmp_path / "out/0/events").read_bytes())
    assert events[-1].type == "terminated"
    assert status(tmp_path / "out/1") is None and status(tmp_path / "out/2") is None
    done = batch_info(daemon, "b1")
    assert (done.cancelled, done.failed, done.queued, done.running) == (2, 1, 0, 0)
    unknown = saturn("cancel", "b9", *daemon.address)
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == [
        "saturn: error: the daemon refused: b9: no queued or running batch or run matches"
    ]


def test_sigterm_drains_then_stops_runs_and_keeps_the_queue(
    daemon: Daemon, tmp_path: Path, saturn: Saturn
) -> None:
    daemon.start("--nprocs", "1", "--shutdown-grace", "0.5", "--grace", "1")
    job = batch_file(tmp_path / "job.json", tmp_path / "out", ["sleep 60", "echo later"])
    assert saturn("submit", str(job), *daemon.address).returncode == 0
    wait_for(lambda: daemon.ps().running, what="the first run")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    assert status(tmp_path / "out/0") == 143
    assert status(tmp_path / "out/1") is None
    assert "shutdown grace over: stopping 1 running runs" in daemon.log()
    daemon.start("--nprocs", "1")
    wait_for(lambda: status(tmp_path / "out/1") == 0, what="the queued run, after a restart")
    assert batch_info(daemon, "b1").succeeded == 1


def test_drain_lets_running_runs_finish_and_refuses_new_batches(
    daemon: Daemon, tmp_path: Path, saturn: Saturn
) -> None:
    gate = tmp_path / "gate"
    daemon.start("--nprocs", "1")
    job = batch_file(tmp_path / "job.json", tmp_path / "out", [gated(gate), "true"])
    assert saturn("submit", str(job), *daemon.address).returncode == 0
    wait_for(lambda: daemon.ps().running, what="the first run")
    drained = saturn("drain", *daemon.address)
    assert drained.stdout.strip() == "draining: 1 running, 1 queued stay queued"
    assert daemon.ps().state == "draining"
    other = batch_file(tmp_path / "other.json", tmp_path / "other", ["true"])
    refused = saturn("submit", str(other), *daemon.address)
    assert refused.returncode == 2
    assert "draining" in refused.stderr and len(refused.stderr.splitlines()) == 1
    gate.touch()
    assert daemon.wait() == 0
    assert status(tmp_path / "out/0") == 0 and status(tmp_path / "out/1") is None


def test_sighup_reloads_nprocs_without_stopping_runs(
    daemon: Daemon, tmp_path: Path, saturn: Saturn
) -> None:
    config = tmp_path / "daemon.yaml"
    config.write_text("nprocs: 1\n")
    gate = tmp_path / "gate"
    daemon.start("--config", str(config))
    job = batch_file(tmp_path / "job.json", tmp_path / "out", [gated(gate)] * 3)
    assert saturn("submit", str(job), *daemon.address).returncode == 0
    wait_for(lambda: daemon.ps().running, what="the first run")
    first = daemon.ps().running[0]
    config.write_text("nprocs: [oops]\n")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "kept the old settings" in daemon.log(), what="the failed reload")
    assert "$.nprocs" in daemon.log()
    config.write_text("nprocs: 3\n")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: len(daemon.ps().running) == 3, what="three runs after the reload")
    snapshot = daemon.ps()
    assert snapshot.nprocs == 3 and first.pid in {r.pid for r in snapshot.running}
    gate.touch()
    wait_for(lambda: batch_info(daemon, "b1").succeeded == 3, what="the runs")


def test_the_socket_serves_only_its_own_user(daemon: Daemon, tmp_path: Path) -> None:
    daemon.start("--nprocs", "1")
    assert stat.S_IMODE(os.stat(daemon.socket).st_mode) == 0o600
    # Open the way on the filesystem, so only the peer-credentials check stands.
    os.chmod(daemon.socket_dir, 0o777)
    os.chmod(daemon.socket, 0o777)
    if os.getuid() != 0:
        pytest.fail("this test switches to another user and needs root, as CI has")
    assert _connect_as(65534, daemon.socket) == b""  # closed without an answer
    wait_for(lambda: "refused a connection from uid 65534" in daemon.log(), what="the log")


def test_a_client_of_another_protocol_version_gets_a_clear_error(daemon: Daemon) -> None:
    daemon.start("--nprocs", "1")
    frame = msgspec.msgpack.encode({"type": "ps", "protocol": 99})
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(daemon.socket)
        sock.sendall(len(frame).to_bytes(4, "big") + frame)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    reply = msgspec.msgpack.decode(data[4:])
    assert reply["type"] == "error"
    assert "the client speaks protocol 99, this daemon speaks 1" in reply["message"]


def test_readiness_is_sent_to_notify_socket_and_the_log_is_json(
    daemon: Daemon, tmp_path: Path, saturn: Saturn
) -> None:
    address = str(daemon.socket_dir / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.settimeout(30)
        daemon.start("--nprocs", "1", "--log-format", "json", env={"NOTIFY_SOCKET": address})
        ready = listener.recv(4096).decode()
        assert ready.splitlines()[0] == "READY=1"
        assert f"MAINPID={daemon.proc.pid}" in ready.splitlines()  # type: ignore[union-attr]
        job = batch_file(tmp_path / "job.json", tmp_path / "out", ["true"])
        assert saturn("submit", str(job), *daemon.address).returncode == 0
        # The daemon's own view, not the status file: the daemon logs batch_done after
        # it has journaled the end, which follows the file.
        wait_for(lambda: batch_info(daemon, "b1").succeeded == 1, what="the run")
        assert status(tmp_path / "out/0") == 0
        assert saturn("drain", "--wait", *daemon.address).returncode == 0
        assert listener.recv(4096) == b"STATUS=draining"
        assert listener.recv(4096) == b"STOPPING=1"
    entries = [json.loads(line) for line in daemon.log().splitlines()]
    assert [e["event"] for e in entries] == [
        "ready",
        "accepted",
        "batch_done",
        "draining",
        "stopped",
    ]
    assert all({"time", "level", "message"} <= e.keys() for e in entries)
    assert entries[1]["batch"] == "b1" and entries[1]["runs"] == 1


def test_spooled_batch_files_are_taken_or_rejected(daemon: Daemon, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    daemon.start("--nprocs", "2", "--spool", str(spool))
    batch_file(spool / ".incoming.tmp", tmp_path / "out", ["echo spooled"])
    os.rename(spool / ".incoming.tmp", spool / "a.json")
    (spool / "bad.json").write_text('{"nprocs": 1, "remote_output_path": "/tmp/x", "runz": []}')
    wait_for(lambda: status(tmp_path / "out/0") == 0, what="the spooled run")
    assert (tmp_path / "out/0/stdout").read_text() == "spooled\n"
    assert (spool / "accepted/a.json").exists() and not (spool / "a.json").exists()
    wait_for((spool / "rejected/bad.json.error").exists, what="the rejection")
    reason = (spool / "rejected/bad.json.error").read_text()
    assert "$.runz: unknown field" in reason
    assert batch_info(daemon, "b1").source == str(spool / "accepted/a.json")


def test_bad_input_is_one_line_and_queues_nothing(
    daemon: Daemon, tmp_path: Path, saturn: Saturn
) -> None:
    absent = saturn("ps", *daemon.address)
    assert absent.returncode == 2
    assert absent.stderr.strip() == (
        f"saturn: error: {daemon.socket}: no daemon is listening (start one: saturn daemon)"
    )
    daemon.start("--nprocs", "1")
    good = batch_file(tmp_path / "good.json", tmp_path / "out", ["true"])
    bad = tmp_path / "bad.json"
    bad.write_text(
        '{"nprocs": 1, "remote_output_path": "/tmp/x", "runs": [{"cmd": "x", "tmeout": 1}]}'
    )
    result = saturn("submit", str(good), str(bad), *daemon.address)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"saturn: error: {bad}: $.runs[0].tmeout: unknown field (did you mean 'timeout'?)"
    ]
    assert daemon.ps().batches == []
    assert saturn("submit", str(good), *daemon.address).returncode == 0
    again = saturn("submit", str(good), *daemon.address)
    if again.returncode == 0:  # the first copy finished already: a second run is fine
        assert again.stdout.startswith("b2")
    else:
        assert "already queued as b1" in again.stderr
    second = subprocess.run(
        daemon.command_line("--nprocs", "1"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == 2
    assert second.stderr.strip().splitlines() == [
        f"saturn: error: {daemon.state_dir}: in use by daemon pid {daemon.proc.pid}"  # type: ignore[union-attr]
    ]


def test_runs_write_to_s3_through_the_daemon(
    daemon: Daemon, s3: str, tmp_path: Path, saturn: Saturn
) -> None:
    daemon.start("--nprocs", "2", "--staging-dir", str(tmp_path / "staging"))
    job = batch_file(tmp_path / "job.json", f"{s3}/daemon", ["echo to-s3", "exit 4"])
    assert saturn("submit", str(job), *daemon.address).returncode == 0
    wait_for(lambda: batch_info(daemon, "b1").queued + batch_info(daemon, "b1").running == 0,
             what="the runs")  # fmt: skip

    def counts() -> tuple[int, int]:
        report = saturn("status", f"{s3}/daemon", "--json")
        assert report.returncode == 0, report.stderr
        document = json.loads(report.stdout)
        return document["succeeded"], document["failed"]

    # status reads the root's ledger, which the daemon flushes every 10 s.
    wait_for(lambda: counts() == (1, 1), 30, "the ledger")
    logs = saturn("logs", f"{s3}/daemon/0")
    assert logs.stdout == "to-s3\n"
    missing = batch_file(tmp_path / "nobucket.json", "s3://no-such-bucket/x", ["true"])
    refused = saturn("submit", str(missing), *daemon.address)
    assert refused.returncode == 2 and "no-such-bucket" in refused.stderr


def test_a_full_disk_pauses_the_daemon_until_there_is_room(
    mount_tmpfs: Callable[[str], Path], daemon: Daemon, tmp_path: Path, saturn: Saturn
) -> None:
    disk = mount_tmpfs("2m")
    gate = tmp_path / "gate"
    daemon.start("--nprocs", "1", "--min-free-mb", "0.5", "--state-dir", str(disk / "state"))
    job = batch_file(
        tmp_path / "job.json", disk / "out", ["echo first; " + gated(gate), "echo second"]
    )
    assert saturn("submit", str(job), *daemon.address).returncode == 0
    first = disk / "out/0/stdout"
    wait_for(lambda: first.exists() and first.read_text() == "first\n", what="the first run")
    filler = disk / "filler"
    with filler.open("wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    wait_for(lambda: daemon.ps().state == "paused", what="the pause")
    assert f"{disk}" in (daemon.ps().paused_reason or "")
    refused = saturn("submit", str(batch_file(tmp_path / "b.json", disk / "b", ["true"])),
                     *daemon.address)  # fmt: skip
    assert refused.returncode == 2 and "full" in refused.stderr, refused.stderr
    gate.touch()  # the first run ends; its outcome cannot be written yet
    wait_for(lambda: "could not record the outcome" in daemon.log(), what="the failed record")
    snapshot = daemon.ps()
    assert (snapshot.state, snapshot.queued, len(snapshot.running)) == ("paused", 1, 1)
    assert status(disk / "out/0") is None and not (disk / "out/1").exists()
    filler.unlink()
    wait_for(lambda: status(disk / "out/1") == 0, what="the second run, after the pause")
    assert status(disk / "out/0") == 0
    assert (disk / "out/0/stdout").read_text() == "first\n"
    assert daemon.ps().state == "running"
    log = daemon.log()
    assert "starting no runs until there is room" in log and "there is room again" in log
    assert not [p for p in disk.rglob("*") if ".tmp-" in p.name]


def test_open_files_stay_flat_over_many_runs(
    daemon: Daemon, tmp_path: Path, saturn: Saturn
) -> None:
    daemon.start("--nprocs", "4")
    pid = daemon.proc.pid  # type: ignore[union-attr]

    def sweep(name: str, runs: int) -> None:
        job = batch_file(tmp_path / f"{name}.json", tmp_path / name, ["true"] * runs)
        assert saturn("submit", str(job), *daemon.address).returncode == 0
        wait_for(lambda: not daemon.ps().queued and not daemon.ps().running, 120, "the sweep")

    sweep("warm", 200)
    before = len(os.listdir(f"/proc/{pid}/fd"))
    sweep("many", 2000)
    after = len(os.listdir(f"/proc/{pid}/fd"))
    assert after <= before + 2, (before, after)


def _connect_as(uid: int, path: str) -> bytes:
    """Connect to ``path`` from a forked child running as ``uid``; what it received."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery, just the socket, then _exit
        code = 1
        try:
            os.close(reader)
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(path)
                # The daemon may close before, while or after the request is sent: each
                # is a refusal, and no order of the two is assumed.
                try:
                    sock.sendall(b"\x00\x00\x00\x01\x80")
                    answer = sock.recv(100)
                except (BrokenPipeError, ConnectionResetError):  # closed, request unread
                    answer = b""
                os.write(writer, b"received:" + answer)
            code = 0
        except BaseException as exc:  # told to the parent, whose assertion shows it
            os.write(writer, f"failed: {exc!r}".encode())
        finally:
            os._exit(code)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        received = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and received.startswith(b"received:"), received
    return received.removeprefix(b"received:")


def test_watch_follows_the_daemon_until_it_exits(
    daemon: Daemon, tmp_path: Path, saturn: Saturn
) -> None:
    gate = tmp_path / "gate"
    daemon.start("--nprocs", "1")
    job = batch_file(tmp_path / "job.json", tmp_path / "out", [gated(gate)])
    assert saturn("submit", str(job), *daemon.address).returncode == 0
    wait_for(lambda: daemon.ps().running, what="the run")
    leader, follower = pty.openpty()
    watch = subprocess.Popen(
        [*CLI, "watch", "--interval", "0.1", *daemon.address],
        stdout=follower,
        stderr=follower,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "160"},
    )
    os.close(follower)
    screen = b""

    def shows(text: str) -> bool:
        nonlocal screen
        with contextlib.suppress(OSError):  # EIO: watch has exited
            if select.select([leader], [], [], 0.05)[0]:
                screen += os.read(leader, 65536)
        return text.encode() in screen

    try:
        wait_for(lambda: shows("b1.0"), what="the running run on the screen")
        assert saturn("drain", *daemon.address).returncode == 0
        wait_for(lambda: shows("draining"), what="the drain on the screen")
        gate.touch()
        wait_for(lambda: shows("the daemon has exited"), what="watch to notice the exit")
        assert watch.wait(timeout=30) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
        os.close(leader)
