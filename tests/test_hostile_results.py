"""Hostile runs' results: links, FIFOs, names storage refuses, and ``local_results_dir``.

Each case runs the real CLI (``batch`` with local and moto S3 outputs, ``submit`` to a
real daemon) and snapshots the directory around the run before and after it: nothing
outside the run's own directories may change (tests/hostile.py).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from conftest import CLI, wait_for
from daemons import Daemon
from hostile import changes_outside, snapshot
from saturn_async.exceptions import NotRegularFile
from saturn_async.storage.layout import RESULTS_NOT_SAVED, Event, decode_events
from saturn_async.storage.local import LocalStorage
from saturn_async.storage.results_walk import Entry, walk_results
from saturn_async.storage.s3 import S3Storage

Saturn = Callable[..., subprocess.CompletedProcess[str]]
R = "$SATURN_RUN_LOCAL_RESULTS_DIR"
SECRET = "not-for-the-bucket"


def write_batch(tmp_path: Path, root: str, runs: list[dict[str, Any]], **fields: Any) -> Path:
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"nprocs": 2, "remote_output_path": root, "runs": runs, **fields}))
    return path


def local_events(run_dir: Path) -> list[Event]:
    return decode_events((run_dir / "events").read_bytes())


def local_status(run_dir: Path) -> int | None:
    try:
        return int((run_dir / "status_code").read_text())
    except FileNotFoundError:
        return None


def has_event(events: list[Event], kind: str, path: str, fragment: str) -> bool:
    return any(e.type == kind and e.path == path and fragment in (e.error or "") for e in events)


# --- local_results_dir: refused before anything starts -------------------------------


@dataclass
class Refused:
    name: str
    runs: Callable[[Path], list[dict[str, Any]]]
    message: str
    """A fragment of the one line on stderr (after the file and field)."""
    field: str = "$.runs[0].local_results_dir"
    prepare: Callable[[Path], None] = lambda tmp: None
    root: str = "out"


def _existing(tmp: Path) -> None:
    (tmp / "mine").mkdir()
    (tmp / "mine/keep.txt").write_text("the user's own file")


def _other_output(tmp: Path) -> None:
    (tmp / "out/1").mkdir(parents=True)
    (tmp / "out/1/precious").write_text("an earlier run's output")


REFUSED = [
    Refused(
        "an existing directory",
        lambda tmp: [{"cmd": "true", "local_results_dir": str(tmp / "mine")}],
        "exists already",
        prepare=_existing,
    ),
    Refused(
        "another run's output path",
        lambda tmp: [
            {"cmd": f"echo x > {R}/x", "local_results_dir": str(tmp / "out/1")},
            {"cmd": "true"},
        ],
        "is the output path",
    ),
    Refused(
        "another run's output path, existing",
        lambda tmp: [
            {"cmd": "true", "local_results_dir": str(tmp / "out/1")},
            {"cmd": "true"},
        ],
        "exists already",
        prepare=_other_output,
    ),
    Refused(
        "inside another run's output",
        lambda tmp: [
            {"cmd": "true"},
            {"cmd": "true", "local_results_dir": str(tmp / "out/0/results/deep")},
        ],
        "lies inside the output path",
        field="$.runs[1].local_results_dir",
    ),
    Refused(
        "the root's reserved directory",
        lambda tmp: [{"cmd": "true", "local_results_dir": str(tmp / "out/.saturn/x")}],
        "lies inside saturn's reserved .saturn/",
    ),
    Refused(
        "a directory holding the batch root",
        lambda tmp: [{"cmd": "true", "local_results_dir": str(tmp / "work")}],
        "holds",
        root="work/out",
    ),
    Refused(
        "two runs sharing one",
        lambda tmp: [
            {"cmd": "true", "local_results_dir": str(tmp / "shared")},
            {"cmd": "true", "local_results_dir": str(tmp / "shared")},
        ],
        "is the local_results_dir of $.runs[0]",
        field="$.runs[1].local_results_dir",
    ),
    Refused(
        "one inside another run's",
        lambda tmp: [
            {"cmd": "true", "local_results_dir": str(tmp / "shared/inner")},
            {"cmd": "true", "local_results_dir": str(tmp / "shared")},
        ],
        "holds",
        field="$.runs[1].local_results_dir",
    ),
    Refused(
        "a link to another run's output",
        lambda tmp: [
            {"cmd": "true", "local_results_dir": str(tmp / "link/1")},
            {"cmd": "true"},
        ],
        "is the output path",
        prepare=lambda tmp: (tmp / "out").mkdir() or (tmp / "link").symlink_to(tmp / "out"),
    ),
]


@pytest.mark.parametrize("command", ["batch", "submit"])
@pytest.mark.parametrize("case", REFUSED, ids=[c.name for c in REFUSED])
def test_local_results_dir_that_needs_moving_what_saturn_did_not_create_is_refused(
    case: Refused, command: str, tmp_path: Path, saturn: Saturn
) -> None:
    case.prepare(tmp_path)
    root = tmp_path / case.root
    job = write_batch(tmp_path, str(root), case.runs(tmp_path))
    before = snapshot(tmp_path)
    # submit checks the files before it even looks for a daemon (none runs here).
    daemon = ["--socket", str(tmp_path / "no.sock")] if command == "submit" else []
    result = saturn(command, str(job), *daemon)
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith(f"saturn: error: {job}: {case.field}: "), line
    assert case.message in line
    assert changes_outside(before, snapshot(tmp_path), []) == []


@pytest.mark.parametrize("spelling", ["out/0/results", "{tmp}/out//0/results/"])
def test_the_runs_own_results_dir_is_accepted_however_it_is_spelled(
    spelling: str, tmp_path: Path, saturn: Saturn
) -> None:
    given = spelling.format(tmp=tmp_path)
    job = write_batch(tmp_path, "out", [{"cmd": f"echo r > {R}/r", "local_results_dir": given}])
    result = saturn("batch", "-q", str(job))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/0/results/r").read_text() == "r\n"


def test_a_spooled_file_whose_local_results_dir_exists_is_rejected(
    daemon: Daemon, tmp_path: Path
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep").write_text("keep")
    spool = tmp_path / "spool"
    spool.mkdir()
    daemon.start("--nprocs", "1", "--spool", str(spool))
    job = write_batch(
        tmp_path,
        str(tmp_path / "out"),
        [{"cmd": "true", "local_results_dir": str(mine)}],
    )
    before = snapshot(tmp_path)
    os.rename(job, spool / "a.json")
    wait_for((spool / "rejected/a.json").exists, what="the spooled file rejected")
    assert (mine / "keep").read_text() == "keep"
    assert not (tmp_path / "out").exists()
    assert (
        changes_outside(before, snapshot(tmp_path), ["spool", "job.json", "state", "daemon-0.log"])
        == []
    )


# --- local_results_dir that saturn creates: collected, links kept, FIFOs not opened ---


@pytest.mark.parametrize(
    "where",
    [
        pytest.param("same-filesystem", id="renamed"),
        pytest.param("/dev/shm", id="copied-across-filesystems"),
    ],
)
def test_a_local_results_dir_with_links_and_a_fifo_is_collected_and_recorded(
    where: str, tmp_path: Path, saturn: Saturn
) -> None:
    if where == "/dev/shm" and not os.access("/dev/shm", os.W_OK):
        pytest.skip("no writable /dev/shm (another filesystem) here")
    base = tmp_path if where == "same-filesystem" else Path(where)
    results = base / f"saturn-results-{os.getpid()}-{tmp_path.name}"
    (tmp_path / "outside.txt").write_text(SECRET)
    cmd = (
        f"[ -e {R}/a ] || {{ echo first > {R}/a; exit 1; }}; "  # attempt 2 succeeds
        f"mkfifo {R}/fifo; ln -s {tmp_path}/outside.txt {R}/link; mkdir {R}/d; echo b > {R}/d/b"
    )
    job = write_batch(
        tmp_path,
        str(tmp_path / "out"),
        [{"cmd": cmd, "local_results_dir": str(results), "retries": 1}, {"cmd": "true"}],
    )
    before = snapshot(tmp_path)
    result = saturn("batch", "-q", str(job))
    assert result.returncode == 0, result.stderr
    run = tmp_path / "out/0"
    assert local_status(run) == 0
    assert (run / "results/a").read_text() == "first\n"
    assert (run / "results/d/b").read_text() == "b\n"
    assert os.readlink(run / "results/link") == f"{tmp_path}/outside.txt"  # kept as a link
    events = local_events(run)
    if where == "same-filesystem":  # renamed: the FIFO moves as it is, unopened
        assert stat.S_ISFIFO(os.lstat(run / "results/fifo").st_mode)
    else:  # copied: the FIFO is skipped, with an event
        assert not os.path.lexists(run / "results/fifo")
        assert has_event(events, "skipped", "results/fifo", "a FIFO")
    assert not results.exists()  # saturn created it, and removed it once collected
    assert (tmp_path / "outside.txt").read_text() == SECRET
    assert changes_outside(before, snapshot(tmp_path), ["out"]) == []
    # A rerun skips the completed run, and runs the others again.
    again = saturn("batch", "-q", "--skip-completed", str(job))
    assert again.returncode == 0, again.stderr
    assert (run / "results/a").read_text() == "first\n"


# --- S3: links and special files skipped, names S3 refuses fail only their run -------


@dataclass
class Shipped:
    name: str
    cmd: str
    status: int
    events: list[tuple[str, str, str]] = field(default_factory=list)
    """(type, path, fragment of error) of events the bad run must have."""
    uploaded: dict[str, bytes] = field(default_factory=dict)
    """Result objects the bad run must have (relative to results/)."""
    without_dac_override: bool = False
    """Root reads a file of mode 000: as root, saturn runs without CAP_DAC_OVERRIDE."""


# setpriv (util-linux) drops the capabilities from the bounding set, so root's next exec
# gets neither: mode bits then apply to root as to anyone.
WITHOUT_DAC_OVERRIDE = [
    "setpriv",
    "--bounding-set=-dac_override,-dac_read_search",
    "--inh-caps=-dac_override,-dac_read_search",
]


NOT_UTF8 = "$(printf 'n\\377m')"
SHIPPED = [
    Shipped(
        "a FIFO",
        f"mkfifo {R}/fifo; echo a > {R}/a",
        0,
        [("skipped", "results/fifo", "a FIFO")],
        {"a": b"a\n"},
    ),
    Shipped(
        "a link to a file outside",
        f"ln -s $OUTSIDE {R}/passwd; echo a > {R}/a",
        0,
        [("skipped", "results/passwd", "a symbolic link")],
        {"a": b"a\n"},
    ),
    Shipped(
        "a dangling link",
        f"ln -s /nonexistent/x {R}/dangling; mkdir {R}/d; echo b > {R}/d/b",
        0,
        [("skipped", "results/dangling", "a symbolic link")],
        {"d/b": b"b\n"},
    ),
    Shipped(
        "a linked directory",
        f"ln -s $(dirname $OUTSIDE) {R}/tree; echo a > {R}/a",
        0,
        [("skipped", "results/tree", "a symbolic link")],
        {"a": b"a\n"},
    ),
    Shipped(
        "a socket",
        # Relative: a socket's path is limited to 107 bytes.
        f"cd {R} && {sys.executable} -c \"import socket; socket.socket(socket.AF_UNIX).bind('sock')\"",
        0,
        [("skipped", "results/sock", "a socket")],
    ),
    Shipped(
        "a name with a newline",
        f'echo a > {R}/a; echo x > "{R}/new\nline"',
        RESULTS_NOT_SAVED,
        [("not_saved", "results/new\nline", "control character")],
        {"a": b"a\n"},
    ),
    Shipped(
        "a name that is not UTF-8",
        f'echo a > {R}/a; echo x > "{R}/{NOT_UTF8}"',
        RESULTS_NOT_SAVED,
        [("not_saved", "results/n\\udcffm", "not UTF-8")],
        {"a": b"a\n"},
    ),
    Shipped(
        "a key over 1024 bytes",
        f"p={R}; for i in 1 2 3 4 5 6; do p=$p/$(printf 'k%.0s' $(seq 200)); done; "
        f"mkdir -p $p && echo x > $p/f; echo a > {R}/a",
        RESULTS_NOT_SAVED,
        [("not_saved", "", "S3 takes at most 1,024")],
        {"a": b"a\n"},
    ),
    Shipped(
        "an unreadable file",
        f"echo s > {R}/secret; chmod 000 {R}/secret; echo a > {R}/a",
        RESULTS_NOT_SAVED,
        [("not_saved", "results/secret", "Permission denied")],
        {"a": b"a\n"},
        without_dac_override=True,
    ),
]


@pytest.mark.parametrize("case", SHIPPED, ids=[c.name for c in SHIPPED])
def test_s3_results_never_follow_links_open_special_files_or_end_the_batch(
    case: Shipped, s3: str, tmp_path: Path, saturn: Saturn
) -> None:
    from test_s3_outputs import objects

    outside = tmp_path / "private/outside.txt"
    outside.parent.mkdir()
    outside.write_text(SECRET)
    root = f"{s3}/hostile"
    job = write_batch(
        tmp_path,
        root,
        [{"cmd": case.cmd}, {"cmd": f"echo good > {R}/good"}, {"cmd": "echo last"}],
        env={"OUTSIDE": str(outside)},
    )
    before = snapshot(tmp_path)
    # Before the change a FIFO blocked this forever (the timeout fails it).
    args = ["batch", "-q", "--staging-dir", str(tmp_path / "staging"), str(job)]
    if case.without_dac_override and os.geteuid() == 0:
        # Root reads mode 000 files through CAP_DAC_OVERRIDE: saturn runs without it.
        result = subprocess.run(
            [*WITHOUT_DAC_OVERRIDE, *CLI, *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    else:
        result = saturn(*args, timeout=60)
    assert result.returncode == (0 if case.status == 0 else 1), result.stderr
    assert "Traceback" not in result.stderr
    stored = objects(root)
    assert stored["0/status_code"] == b"%d\n" % case.status
    events = decode_events(stored["0/events"])
    for kind, path, fragment in case.events:
        assert any(
            e.type == kind and (not path or e.path == path) and fragment in (e.error or "")
            for e in events
        ), events
    prefix = "0/results/"
    assert {k[len(prefix) :]: v for k, v in stored.items() if k.startswith(prefix)} == case.uploaded
    assert not any(SECRET.encode() in v for v in stored.values())
    # The other runs of the batch ran and saved everything.
    assert stored["1/status_code"] == b"0\n" and stored["1/results/good"] == b"good\n"
    assert stored["2/status_code"] == b"0\n"
    assert changes_outside(before, snapshot(tmp_path), ["staging", "state"]) == []


def test_a_fifo_in_s3_results_leaves_signals_free_to_stop_saturn(s3: str, tmp_path: Path) -> None:
    """Before the change the upload thread blocked opening the FIFO: INT and TERM were
    ignored. Now the batch ends, and a stop sent right after the run exits is obeyed."""
    done = tmp_path / "run-exited"
    job = write_batch(
        tmp_path,
        f"{s3}/signals",
        [{"cmd": f"mkfifo {R}/fifo; echo a > {R}/a; touch {done}"}],
    )
    proc = subprocess.Popen(
        [*CLI, "batch", "-q", "--staging-dir", str(tmp_path / "staging"), str(job)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(done.exists, what="the run")
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode in (0, 130, 143), stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("kind", ["fifo", "link"])
@pytest.mark.parametrize("storage", ["local", "s3"])
def test_put_file_refuses_a_fifo_or_link_swapped_in_after_the_walk(
    storage: str, kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """What the walk saw as a file may be a FIFO (or a link) by the time it is opened:
    put_file refuses it at once instead of waiting on a writer (or following it)."""
    path = tmp_path / "swapped"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        (tmp_path / "target").write_text(SECRET)
        path.symlink_to(tmp_path / "target")
    target = f"{request.getfixturevalue('s3')}/x" if storage == "s3" else str(tmp_path / "copy")

    async def main() -> None:
        async with S3Storage() if storage == "s3" else LocalStorage() as store:
            with pytest.raises(NotRegularFile):
                await store.put_file(target, str(path))

    anyio.run(main)
    assert not (tmp_path / "copy").exists()


def test_the_walk_reports_links_special_files_and_a_directory_that_vanished(
    tmp_path: Path,
) -> None:
    """The walker yields files and directories, reports the rest, and never enters a
    directory that was removed (or replaced) after it was listed."""
    root = tmp_path / "results"
    (root / "gone").mkdir(parents=True)
    (root / "gone/f").write_text("x")
    (root / "kept").mkdir()
    (root / "kept/f").write_text("x")
    os.mkfifo(root / "fifo")
    (root / "link").symlink_to("/etc/passwd")
    (root / "tree").symlink_to(tmp_path)
    found = {}
    for entry in walk_results(str(root)):
        found[entry.relative] = (entry.kind, entry.reason)
        if entry.relative == "gone" and entry.kind == "dir":
            (root / "gone/f").unlink()
            (root / "gone").rmdir()
    assert found == {
        "gone": ("failed", "vanished while it was being saved"),
        "kept": ("dir", ""),
        "kept/f": ("file", ""),
        "fifo": ("skipped", "a FIFO"),
        "link": ("skipped", "a symbolic link"),
        "tree": ("skipped", "a symbolic link"),
    }
    os.rename(root, tmp_path / "real")
    root.symlink_to(tmp_path / "real")
    assert list(walk_results(str(root))) == [Entry("", "skipped", "a symbolic link")]


# --- the daemon: a run counts as succeeded only once its status is recorded ----------


def test_the_daemon_records_the_status_of_a_run_with_a_fifo_in_its_results(
    daemon: Daemon, tmp_path: Path, saturn: Saturn
) -> None:
    daemon.start("--nprocs", "2")
    results = tmp_path / "scratch"
    job = write_batch(
        tmp_path,
        str(tmp_path / "out"),
        [
            {"cmd": f"mkfifo {R}/fifo; echo a > {R}/a", "local_results_dir": str(results)},
            {"cmd": "true"},
        ],
    )
    before = snapshot(tmp_path)
    assert saturn("submit", str(job), *daemon.address).returncode == 0

    def finished() -> Any:
        snap = daemon.ps()
        return snap.succeeded + snap.failed == 2 and snap

    snap = wait_for(finished, what="both runs")
    # Before the change: counted as succeeded, with no status_code written.
    assert local_status(tmp_path / "out/0") == 0
    assert (snap.succeeded, snap.failed) == (2, 0)
    assert (tmp_path / "out/0/results/a").read_text() == "a\n"
    assert not results.exists()
    assert changes_outside(before, snapshot(tmp_path), ["out", "state", "daemon-0.log"]) == []


# --- collecting: only into the run's own directory, only the directory saturn made ----

SHM = "/dev/shm"
"""Another filesystem than tmp_path (a tmpfs), so that results are copied, not renamed."""
RUN_DIR = "$SATURN_RUN_REMOTE_OUTPUT_PATH"


def _await(path: str) -> str:
    """Shell: wait (without a deadline: the test's timeout is the bound) until ``path`` exists."""
    return f"while [ ! -e {path} ]; do sleep 0.01; done"


@dataclass
class Collected:
    name: str
    runs: Callable[[Path, Path], list[dict[str, Any]]]
    """The batch's runs, given tmp_path and a fresh scratch directory on another filesystem."""
    statuses: dict[str, int]
    """Run directory (relative to out/) -> its recorded status."""
    returncode: int
    events: list[tuple[str, str, str]] = field(default_factory=list)
    """(run directory, type, error fragment) of events with path ``results`` that must exist."""
    saved: dict[str, str] = field(default_factory=dict)
    """Files (relative to out/) and their content after the batch."""


def _victim(tmp: Path) -> None:
    (tmp / "victim/results").mkdir(parents=True)
    (tmp / "victim/results/keep").write_text("precious")
    (tmp / "victim/results/keep2").write_text("lose-me")
    (tmp / "victim/r1").mkdir()
    (tmp / "victim/r1/data").write_text("precious")


COLLECTED = [
    Collected(
        "a sibling swaps the run's directory for a link while it writes",
        lambda tmp, shm: [
            {
                "cmd": f"{_await(tmp / 'written')}; cd {tmp}/out && mv 1 1.moved && "
                f"ln -s {tmp}/victim 1 && touch {tmp}/swapped"
            },
            {
                "cmd": f"echo CLOBBERED > {R}/keep; ln -s x {R}/keep2; touch {tmp}/written; "
                f"{_await(tmp / 'swapped')}",
                "local_results_dir": str(shm / "r1"),
            },
        ],
        {"0": 0, "1.moved": 0},
        0,
        saved={"1.moved/results/keep": "CLOBBERED\n"},
    ),
    Collected(
        "the run replaces its own results/ with a link",
        lambda tmp, shm: [
            {
                "cmd": f"echo CLOBBERED > {R}/keep; ln -s {tmp}/victim {RUN_DIR}/results",
                "local_results_dir": str(shm / "r1"),
            }
        ],
        {"0": RESULTS_NOT_SAVED},
        1,
        [("0", "not_saved", "symbolic link")],
    ),
    Collected(
        "the run swaps a parent of its local_results_dir for a link",
        lambda tmp, shm: [
            {
                "cmd": f"echo r > {R}/r; cd {shm} && mv p p.old && ln -s {tmp}/victim p",
                "local_results_dir": str(shm / "p/r1"),
            }
        ],
        {"0": RESULTS_NOT_SAVED},
        1,
        [("0", "not_saved", "was replaced")],
    ),
    Collected(
        "the run replaces its default results/ with a FIFO",
        lambda tmp, shm: [{"cmd": f"rmdir {R} && mkfifo {R}"}, {"cmd": "true"}],
        {"0": 0, "1": 0},
        0,
    ),
    Collected(
        "the run replaces its local_results_dir with a FIFO, across filesystems",
        lambda tmp, shm: [
            {"cmd": f"rmdir {R} && mkfifo {R}", "local_results_dir": str(shm / "r1")},
            {"cmd": "true"},
        ],
        {"0": RESULTS_NOT_SAVED, "1": 0},
        1,
        [("0", "not_saved", "was replaced")],
    ),
]


@pytest.fixture
def scratch(tmp_path: Path) -> Any:
    """A fresh directory on another filesystem (/dev/shm), removed afterwards."""
    if not os.access(SHM, os.W_OK):
        pytest.skip("no writable /dev/shm (another filesystem) here")
    path = Path(SHM) / f"saturn-collect-{os.getpid()}-{tmp_path.name}"
    path.mkdir()
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.mark.parametrize("case", COLLECTED, ids=[c.name for c in COLLECTED])
def test_results_are_collected_only_into_the_runs_directory_from_what_saturn_made(
    case: Collected, tmp_path: Path, scratch: Path, saturn: Saturn
) -> None:
    """Before the change saturn wrote through a link planted at a run's ``results`` (into
    files outside the batch), moved a directory it did not make when a parent of
    ``local_results_dir`` was swapped, and hung on a FIFO put in its place."""
    _victim(tmp_path)
    job = write_batch(tmp_path, str(tmp_path / "out"), case.runs(tmp_path, scratch))
    before = snapshot(tmp_path)
    result = saturn("batch", "-q", str(job), timeout=30)
    assert result.returncode == case.returncode, result.stderr
    assert "Traceback" not in result.stderr
    for run, status in case.statuses.items():
        assert local_status(tmp_path / "out" / run) == status, run
    for run, kind, fragment in case.events:
        events = local_events(tmp_path / "out" / run)
        assert has_event(events, kind, "results", fragment), events
    for path, content in case.saved.items():
        assert (tmp_path / "out" / path).read_text() == content
    owned = ["out", "job.json", "written", "swapped"]
    assert changes_outside(before, snapshot(tmp_path), owned) == []
