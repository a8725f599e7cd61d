"""The daemon against hostile input: crafted requests straight to its socket, journals
holding batches that cannot run, and connections that exhaust, stall or garble.

Each case checks the reply or log line, that the daemon goes on serving, and (with
tests/hostile.py) that nothing changed outside the directories the daemon owns.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from conftest import wait_for
from daemons import Daemon, framed, read_until_closed, reply_of
from hostile import changes_outside, snapshot
from saturn_async.daemon import journal
from saturn_async.spec.models import Batch, Run

Saturn = Callable[..., subprocess.CompletedProcess[str]]
MB = 1 << 20


def submit_message(*batches: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "submit",
        "protocol": 1,
        "batches": [{"source": source, "batch": batch} for source, batch in batches],
    }


def resolved(root: Path, *runs: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A batch as ``saturn submit`` sends it: every output path absolute."""
    return {
        "nprocs": 1,
        "remote_output_path": str(root),
        "runs": [{"remote_output_path": str(root / str(i)), **run} for i, run in enumerate(runs)],
        **fields,
    }


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def journaled_batches(daemon: Daemon) -> list[str]:
    path = daemon.state_dir / "journal"
    return [r.id for r in journal.read_journal(str(path)) if isinstance(r, journal.Accept)]


# --- 1. a submit is checked where it arrives ---------------------------------------------

OUT = Path("out")  # relative to the test's directory
SUBMITS: dict[str, tuple[Callable[[Path], dict[str, Any]], str]] = {
    "an env name holding '='": (
        lambda t: submit_message(
            (f"{t}/job.json", resolved(t / OUT, {"cmd": "true"}, env={"A=B": "x"}))
        ),
        "job.json: $.env: environment variable name 'A=B' holds '=' or a NUL byte",
    ),
    "a NUL in cmd": (
        lambda t: submit_message((f"{t}/job.json", resolved(t / OUT, {"cmd": "echo a\0b"}))),
        "job.json: $.runs[0].cmd: holds a NUL byte",
    ),
    "an empty env name in a run": (
        lambda t: submit_message(
            (f"{t}/job.json", resolved(t / OUT, {"cmd": "true", "env": {"": "x"}}))
        ),
        "job.json: $.runs[0].env: an environment variable's name is empty",
    ),
    "a cmd over MAX_ARG_STRLEN": (
        lambda t: submit_message(
            (f"{t}/job.json", resolved(t / OUT, {"cmd": "true " + "x" * 140_000}))
        ),
        "job.json: $.runs[0].cmd: is 140,005 bytes; Linux passes at most",
    ),
    "a relative output path": (
        lambda t: submit_message(
            (f"{t}/job.json", {"nprocs": 1, "remote_output_path": "out", "runs": [{"cmd": "x"}]})
        ),
        "job.json: $.remote_output_path: 'out' is not absolute",
    ),
    "a run outside its batch's root": (
        lambda t: submit_message(
            (
                f"{t}/job.json",
                {
                    "nprocs": 1,
                    "remote_output_path": str(t / OUT),
                    "runs": [{"cmd": "true", "remote_output_path": str(t / "elsewhere")}],
                },
            )
        ),
        "$.runs[0].remote_output_path: '" + "{t}/elsewhere' is not inside",
    ),
    "two runs on one path": (
        lambda t: submit_message(
            (
                f"{t}/job.json",
                {
                    "nprocs": 1,
                    "remote_output_path": str(t / OUT),
                    "runs": [
                        {"cmd": "true", "remote_output_path": str(t / OUT / "0")},
                        {"cmd": "true", "remote_output_path": str(t / OUT / "0")},
                    ],
                },
            )
        ),
        "$.runs[1].remote_output_path: '{t}/out/0' is also the output path of $.runs[0]",
    ),
    "two batches of one submit on one path": (
        lambda t: submit_message(
            (f"{t}/a.json", resolved(t / OUT, {"cmd": "true"})),
            (f"{t}/b.json", resolved(t / OUT, {"cmd": "true"})),
        ),
        "b.json: $.runs[0].remote_output_path: '{t}/out/0' is also the output path of "
        "$.runs[0] in {t}/a.json",
    ),
    "two batches of one submit, a run inside the other's": (
        lambda t: submit_message(
            (f"{t}/a.json", resolved(t / OUT, {"cmd": "true"})),
            (
                f"{t}/b.json",
                {
                    "nprocs": 1,
                    "remote_output_path": str(t / OUT),
                    "runs": [{"cmd": "true", "remote_output_path": str(t / OUT / "0/results")}],
                },
            ),
        ),
        "b.json: $.runs[0].remote_output_path: '{t}/out/0/results' lies inside the output path "
        "of $.runs[0] in {t}/a.json",
    ),
    "two batches of one submit, a root inside the other's .saturn/": (
        lambda t: submit_message(
            (f"{t}/a.json", resolved(t / OUT, {"cmd": "true"})),
            (f"{t}/b.json", resolved(t / OUT / ".saturn/ledger", {"cmd": "true"})),
        ),
        "b.json: $.remote_output_path: '{t}/out/.saturn/ledger' lies inside saturn's reserved "
        ".saturn/ of {t}/a.json",
    ),
    "a run inside .saturn/": (
        lambda t: submit_message(
            (
                f"{t}/job.json",
                {
                    "nprocs": 1,
                    "remote_output_path": str(t / OUT),
                    "runs": [{"cmd": "true", "remote_output_path": str(t / OUT / ".saturn/x")}],
                },
            )
        ),
        "is inside .saturn/",
    ),
    "a source on two lines": (
        lambda t: submit_message((f"{t}/job.json\nb7 ok", resolved(t / OUT, {"cmd": "true"}))),
        "submit: $.batches[0].source: '{t}/job.json\\nb7 ok' is not an absolute path or URL",
    ),
}


@pytest.mark.parametrize("case", SUBMITS)
def test_a_crafted_submit_is_refused_and_nothing_is_journaled(
    case: str, daemon: Daemon, tmp_path: Path, saturn: Saturn
) -> None:
    build, expected = SUBMITS[case]
    daemon.start("--nprocs", "1")
    before = snapshot(tmp_path)
    with daemon.connect() as sock:
        sock.sendall(framed(build(tmp_path)))
        reply = reply_of(read_until_closed(sock))
    assert reply["type"] == "error", reply
    assert expected.format(t=tmp_path) in reply["message"], reply["message"]
    assert "\n" not in reply["message"]
    shown = saturn("ps", "--json", *daemon.address)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["batches"] == []
    assert journaled_batches(daemon) == []
    assert changes_outside(before, snapshot(tmp_path), ["state", "daemon-0.log"]) == []


# --- 2. a journaled batch that cannot run is quarantined ----------------------------------


def accept(batch_id: str, source: Path, batch: Batch) -> journal.Accept:
    return journal.Accept(id=batch_id, source=str(source), submitted="2026-01-01T00:00:00Z",
                          batch=batch)  # fmt: skip


def batch_of(root: Path, *runs: Run, **fields: Any) -> Batch:
    for index, run in enumerate(runs):
        run.remote_output_path = run.remote_output_path or f"{root}/{index}"
    return Batch(nprocs=1, remote_output_path=str(root), runs=list(runs), **fields)


def quarantined(daemon: Daemon, batch_id: str) -> str | None:
    return next(b.quarantined for b in daemon.ps().batches if b.id == batch_id)


def test_a_journaled_batch_that_cannot_run_is_quarantined_for_good(
    daemon: Daemon, tmp_path: Path, saturn: Saturn
) -> None:
    """A journal of a version that accepted such a batch: today's daemon died on it at
    every start."""
    bad = batch_of(tmp_path / "bad", Run(cmd="echo a\0b"), Run(cmd="true"), env={"A=B": "x"})
    good = batch_of(tmp_path / "good", Run(cmd="echo fine"))
    daemon.write_journal([accept("b1", tmp_path / "bad.json", bad),
                          accept("b2", tmp_path / "good.json", good)])  # fmt: skip
    before = snapshot(tmp_path)
    daemon.start("--nprocs", "1")
    wait_for((tmp_path / "good/0/status_code").exists, what="the good batch")
    reason = quarantined(daemon, "b1")
    assert reason is not None and reason.startswith("refused on replay: ")
    assert f"{tmp_path}/bad.json: $.env: environment variable name 'A=B'" in reason
    assert daemon.log().count("quarantined b1") == 1
    text = saturn("ps", *daemon.address)
    assert f"b1 quarantined: {reason}" in text.stdout
    listing = json.loads(saturn("ps", "--json", *daemon.address).stdout)
    info = next(b for b in listing["batches"] if b["id"] == "b1")
    assert (info["quarantined"], info["queued"], info["running"]) == (reason, 2, 0)
    assert listing["queued"] == 0  # the held runs will not start: not counted as queued
    assert changes_outside(before, snapshot(tmp_path), ["state", "good", "daemon-0.log"]) == []

    daemon.signal(signal.SIGTERM)  # it stays quarantined, without a second line, after a restart
    assert daemon.wait() == 0
    daemon.start("--nprocs", "1")
    assert quarantined(daemon, "b1") == reason
    assert "quarantined" not in daemon.log()
    cancelled = saturn("cancel", "b1", *daemon.address)
    assert cancelled.stdout.strip() == "b1: cancelled 2 queued, stopping 0 running"
    done = next(b for b in daemon.ps().batches if b.id == "b1")
    assert (done.cancelled, done.queued, done.quarantined) == (2, 0, reason)
    assert not (tmp_path / "bad").exists()


def test_a_journal_record_that_cannot_be_applied_quarantines_its_batch_only(
    daemon: Daemon, tmp_path: Path
) -> None:
    damaged = batch_of(tmp_path / "damaged", Run(cmd="true"))
    good = batch_of(tmp_path / "good", Run(cmd="true"))
    daemon.write_journal([
        accept("b1", tmp_path / "damaged.json", damaged),
        journal.Finish(batch="b1", index=7, status=0),  # there is no run 7
        journal.Launch(batch="b9", index=0, attempt=1, rank=0, ticks=0),  # no batch b9
        accept("b2", tmp_path / "good.json", good),
    ])  # fmt: skip
    before = snapshot(tmp_path)
    daemon.start("--nprocs", "1")
    wait_for((tmp_path / "good/0/status_code").exists, what="the good batch")
    assert changes_outside(before, snapshot(tmp_path), ["state", "good", "daemon-0.log"]) == []
    reason = quarantined(daemon, "b1")
    assert reason is not None
    assert reason.startswith("journal record 2 (finish) could not be replayed: IndexError")
    assert "skipped journal record 3 (launch): KeyError: 'b9'" in daemon.log()
    assert not (tmp_path / "damaged").exists()


def test_a_run_whose_start_raises_quarantines_its_batch_and_the_daemon_goes_on(
    daemon: Daemon, tmp_path: Path
) -> None:
    """An output path with a NUL: creating its directory raises ValueError, which no
    run records (or, where the path is checked on replay, the batch is refused)."""
    bad = batch_of(tmp_path / "bad", Run(cmd="true", remote_output_path=f"{tmp_path}/bad/a\0b"),
                   Run(cmd="true"))  # fmt: skip
    good = batch_of(tmp_path / "good", Run(cmd="true"), Run(cmd="true"))
    daemon.write_journal([accept("b1", tmp_path / "bad.json", bad),
                          accept("b2", tmp_path / "good.json", good)])  # fmt: skip
    before = snapshot(tmp_path)
    daemon.start("--nprocs", "1")
    wait_for((tmp_path / "good/1/status_code").exists, what="the good batch")
    owned = ["state", "good", "bad", "daemon-0.log"]  # bad/: made before the NUL was met
    assert changes_outside(before, snapshot(tmp_path), owned) == []
    reason = quarantined(daemon, "b1")
    assert reason is not None and ("b1.0" in reason or "$.runs[0]" in reason), reason
    info = next(b for b in daemon.ps().batches if b.id == "b1")
    assert (info.queued, info.running, info.succeeded + info.failed) == (2, 0, 0)
    assert not (tmp_path / "bad/1").exists()  # its other run never started
    assert daemon.log().count("quarantined b1") == 1


# --- 3. connections are bounded -----------------------------------------------------------


def test_connections_over_the_cap_are_closed_at_once_and_the_daemon_recovers(
    daemon: Daemon, tmp_path: Path, saturn: Saturn
) -> None:
    daemon.start("--nprocs", "1", "--max-connections", "4")
    before = snapshot(tmp_path)
    held = [daemon.connect() for _ in range(4)]
    try:
        for _ in range(6):
            with daemon.connect() as extra:
                reply = reply_of(read_until_closed(extra))
            assert reply == {"type": "error", "message": "busy: 4 connections are open"}
        refused = saturn("ps", *daemon.address)
        assert refused.returncode == 2
        assert "the daemon refused: busy: 4 connections are open" in refused.stderr
    finally:
        for sock in held:
            sock.close()
    wait_for(daemon.answers, what="ps once the held connections closed")
    assert daemon.log().count("connections are open (max_connections)") == 1
    # 6 extra connections and the ps, and maybe ps polls of answers() before the held
    # connections were seen closing.
    assert re.search(r"below the connection cap again; refused ([7-9]|\d\d+) connections",
                     daemon.log())  # fmt: skip
    assert changes_outside(before, snapshot(tmp_path), ["state", "daemon-0.log"]) == []


@pytest.mark.parametrize(
    "sent", [b"", b"\x00\x00\x00\x64" + b"x" * 10], ids=["nothing", "half a frame"]
)
def test_a_silent_connection_is_closed_after_the_idle_timeout(
    sent: bytes, daemon: Daemon, tmp_path: Path
) -> None:
    daemon.start("--nprocs", "1", "--idle-timeout", "0.5")
    before = snapshot(tmp_path)
    with daemon.connect() as sock:
        sock.sendall(sent)
        reply = reply_of(read_until_closed(sock))  # returns once the daemon closes it
    assert reply == {"type": "error", "message": "nothing received for 0.5 s (idle_timeout)"}
    assert "closed a connection: nothing received for 0.5 s" in daemon.log()
    # A client preempted for 0.5 s between connecting and sending is closed too: retry.
    wait_for(daemon.answers, what="ps after the idle connection")
    assert changes_outside(before, snapshot(tmp_path), ["state", "daemon-0.log"]) == []


def test_a_frame_header_over_the_cap_is_refused_before_anything_is_buffered(
    daemon: Daemon,
    tmp_path: Path,
) -> None:
    daemon.start("--nprocs", "1", "--max-frame-mb", "16")
    before = snapshot(tmp_path)
    pid = daemon.proc.pid  # type: ignore[union-attr]
    rss_before = rss_kib(pid)
    with daemon.connect() as sock:
        sock.sendall((1 << 30).to_bytes(4, "big"))
        reply = reply_of(read_until_closed(sock))
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(64):  # the announced frame: the daemon reads none of it
                sock.sendall(b"\0" * MB)
    assert reply == {
        "type": "error",
        "message": "a frame of 1073741824 bytes is over the limit of 16777216",
    }
    assert rss_kib(pid) < rss_before + 8 * 1024
    assert daemon.answers()
    assert changes_outside(before, snapshot(tmp_path), ["state", "daemon-0.log"]) == []


GARBAGE: dict[str, tuple[bytes, str]] = {
    "random bytes": (b"\x00\x00\x00\x08\xc1\xff\x00garbage"[:12], "not a request"),
    "JSON, not MessagePack": (b'\x00\x00\x00\x0e{"type": "ps"}', "not a request"),
    "a reply, not a request": (framed({"type": "snapshot", "protocol": 1}), "not a request"),
    "nesting 200,000 deep": (
        framed({"type": "ps", "protocol": 1, "x": None})[:-1] + b"\x91" * 200_000 + b"\xc0",
        "not a request",
    ),
}


@pytest.mark.parametrize("case", GARBAGE)
def test_garbage_gets_an_error_and_a_log_line_and_the_daemon_goes_on(
    case: str, daemon: Daemon, tmp_path: Path
) -> None:
    data, expected = GARBAGE[case]
    if case.startswith("nesting"):  # fix the frame's length after the splice
        data = (len(data) - 4).to_bytes(4, "big") + data[4:]
    daemon.start("--nprocs", "1")
    before = snapshot(tmp_path)
    with daemon.connect() as sock:
        sock.sendall(data)
        reply = reply_of(read_until_closed(sock))
    assert reply["type"] == "error" and reply["message"].startswith(expected), reply
    wait_for(lambda: f"closed a connection: {expected}" in daemon.log(), what="the log line")
    assert daemon.answers()
    assert changes_outside(before, snapshot(tmp_path), ["state", "daemon-0.log"]) == []


def test_a_client_that_leaves_mid_frame_is_logged_and_the_daemon_goes_on(
    daemon: Daemon,
    tmp_path: Path,
) -> None:
    daemon.start("--nprocs", "1")
    before = snapshot(tmp_path)
    with daemon.connect() as sock:
        sock.sendall(b"\x00\x00\x01\x00partial")
    wait_for(lambda: "a client left before its request was complete" in daemon.log(),
             what="the log line")  # fmt: skip
    assert daemon.answers()
    assert changes_outside(before, snapshot(tmp_path), ["state", "daemon-0.log"]) == []


def test_running_out_of_descriptors_on_accept_is_logged_and_survived(
    daemon: Daemon,
    tmp_path: Path,
) -> None:
    daemon.start("--nprocs", "1")
    before = snapshot(tmp_path)
    pid = daemon.proc.pid  # type: ignore[union-attr]
    limit = len(os.listdir(f"/proc/{pid}/fd")) + 2
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))
    held = [daemon.connect() for _ in range(8)]
    try:
        wait_for(lambda: "cannot accept connections: [Errno 24]" in daemon.log(),
                 what="EMFILE on accept")  # fmt: skip
        assert daemon.proc.poll() is None  # type: ignore[union-attr]
    finally:
        for sock in held:
            sock.close()
    wait_for(daemon.answers, what="ps once descriptors are free again")
    assert "accepting connections again" in daemon.log()
    assert changes_outside(before, snapshot(tmp_path), ["state", "daemon-0.log"]) == []


# --- 4. the cause of the drain's InvalidStateError ----------------------------------------


def test_a_connection_cancelled_as_its_socket_turns_readable_raises_nothing() -> None:
    """anyio's socket streams registered Future.set_result as the selector callback: a
    cancellation (a timeout, the drain's shutdown) landing in the loop iteration where
    the socket turned readable made it raise InvalidStateError into the daemon's log."""
    from saturn_async.daemon.server import Connection  # here: the old tree lacks it

    async def scenario() -> list[object]:
        loop = asyncio.get_running_loop()
        errors: list[object] = []
        loop.set_exception_handler(lambda _, context: errors.append(context))
        ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        connection = Connection(ours, idle=30)
        waiting = anyio.Event()
        scope = anyio.CancelScope()

        async def receive() -> None:
            with scope:
                waiting.set()
                await connection.receive()

        async with anyio.create_task_group() as tg:
            tg.start_soon(receive)
            await waiting.wait()
            await anyio.lowlevel.checkpoint()  # the reader is now parked on its socket
            peer.send(b"x")  # readable at the loop's next poll...
            loop.call_soon(scope.cancel)  # ...where this callback runs first
        ours.close()
        peer.close()
        return errors

    assert anyio.run(scenario) == []


# --- a submitted batch whose outputs meet those of a live batch --------------------------

LIVE = "Z"  # a live batch's root: 3 runs, the first held by a gate, the others queued
OVERLAPS: dict[str, tuple[Callable[[Path], dict[str, Any]], str]] = {
    "the same root": (
        lambda t: {"nprocs": 1, "remote_output_path": str(t / LIVE), "runs": [{"cmd": "true"}]},
        f"$.runs[0].remote_output_path: '{{t}}/{LIVE}/0' is the output path '{{t}}/{LIVE}/0'",
    ),
    "the same root through a symlink": (
        lambda t: {"nprocs": 1, "remote_output_path": str(t / "Zl"), "runs": [{"cmd": "true"}]},
        f"$.runs[0].remote_output_path: '{{t}}/Zl/0' is the output path '{{t}}/{LIVE}/0'",
    ),
    "a root inside a queued run's output": (
        lambda t: {"nprocs": 1, "remote_output_path": str(t / LIVE / "2"), "runs": [{"cmd": "x"}]},
        f"'{{t}}/{LIVE}/2/0' lies inside the output path '{{t}}/{LIVE}/2'",
    ),
    "a run output holding a live one": (
        lambda t: {
            "nprocs": 1,
            "remote_output_path": str(t),
            "runs": [{"cmd": "true", "remote_output_path": str(t / LIVE)}],
        },
        f"'{{t}}/{LIVE}' holds saturn's reserved .saturn/ of a queued or running batch",
    ),
    "a local_results_dir that is a queued run's output": (
        lambda t: {
            "nprocs": 1,
            "remote_output_path": str(t / "Y"),
            "runs": [{"cmd": "true", "local_results_dir": str(t / LIVE / "2")}],
        },
        f"$.runs[0].local_results_dir: '{{t}}/{LIVE}/2' is the output path '{{t}}/{LIVE}/2'",
    ),
    "a local_results_dir inside a queued run's output": (
        lambda t: {
            "nprocs": 1,
            "remote_output_path": str(t / "Y"),
            "runs": [{"cmd": "true", "local_results_dir": str(t / "Zl" / "1" / "r")}],
        },
        f"$.runs[0].local_results_dir: '{{t}}/Zl/1/r' lies inside the output path '{{t}}/{LIVE}/1'",
    ),
}


@pytest.mark.parametrize("case", sorted(OVERLAPS))
def test_a_batch_meeting_a_live_batchs_outputs_is_refused(
    case: str, daemon: Daemon, tmp_path: Path, saturn: Saturn
) -> None:
    make, fragment = OVERLAPS[case]
    gate = tmp_path / "gate"
    (tmp_path / "Zl").symlink_to(LIVE)
    live = {
        "nprocs": 1,
        "remote_output_path": str(tmp_path / LIVE),
        "runs": [{"cmd": f"while [ ! -e {gate} ]; do sleep 0.02; done"}] + [{"cmd": "true"}] * 2,
    }
    (tmp_path / "z.json").write_text(json.dumps(live))
    (tmp_path / "y.json").write_text(json.dumps(make(tmp_path)))
    daemon.start("--nprocs", "1")
    assert saturn("submit", "z.json", *daemon.address).returncode == 0
    wait_for(lambda: daemon.ps().running, what="the live batch's first run")
    before = snapshot(tmp_path)
    refused = saturn("submit", "y.json", *daemon.address)
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert f"{tmp_path}/y.json: " in lines[0], lines[0]
    assert fragment.format(t=tmp_path) in lines[0], lines[0]
    assert journaled_batches(daemon) == ["b1"]
    assert changes_outside(before, snapshot(tmp_path), ["state", "daemon-0.log", LIVE]) == []
    gate.touch()
    wait_for((tmp_path / LIVE / "2" / "status_code").exists, 30, "the live batch")
    assert not (tmp_path / "Y").exists()


def test_a_crafted_submit_meeting_a_live_batch_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    """The same check where a client sends the request itself (no client-side check)."""
    gate = tmp_path / "gate"
    daemon.start("--nprocs", "1")
    first = submit_message(
        (f"{tmp_path}/a.json", resolved(tmp_path / "R", {"cmd": f"while [ ! -e {gate} ]; do sleep 0.02; done"}))
    )  # fmt: skip
    with daemon.connect() as sock:
        sock.sendall(framed(first))
        assert reply_of(read_until_closed(sock))["type"] == "accepted"
    second = submit_message((f"{tmp_path}/b.json", resolved(tmp_path / "R", {"cmd": "true"})))
    with daemon.connect() as sock:
        sock.sendall(framed(second))
        reply = reply_of(read_until_closed(sock))
    assert reply["type"] == "error", reply
    assert reply["message"].startswith(f"{tmp_path}/b.json: $.runs[0].remote_output_path: ")
    assert journaled_batches(daemon) == ["b1"]
    gate.touch()


def test_a_spooled_file_meeting_a_live_batch_is_rejected(daemon: Daemon, tmp_path: Path) -> None:
    gate, spool = tmp_path / "gate", tmp_path / "spool"
    spool.mkdir()
    daemon.start("--nprocs", "1", "--spool", str(spool))
    first = submit_message(
        (f"{tmp_path}/a.json", resolved(tmp_path / "R", {"cmd": f"while [ ! -e {gate} ]; do sleep 0.02; done"}))
    )  # fmt: skip
    with daemon.connect() as sock:
        sock.sendall(framed(first))
        assert reply_of(read_until_closed(sock))["type"] == "accepted"
    (spool / ".b.tmp").write_text(
        json.dumps({"nprocs": 1, "remote_output_path": str(tmp_path / "R"), "runs": [{"cmd": "true"}]})
    )  # fmt: skip
    os.rename(spool / ".b.tmp", spool / "b.json")
    wait_for((spool / "rejected/b.json.error").exists, what="the rejection")
    reason = (spool / "rejected/b.json.error").read_text()
    assert f"b.json: $.runs[0].remote_output_path: '{tmp_path}/R/0' is the output path" in reason
    assert journaled_batches(daemon) == ["b1"]
    gate.touch()
