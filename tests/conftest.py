"""Shared fixtures: run the real CLI in a subprocess, write job files, wait on conditions."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CLI = [sys.executable, "-m", "saturn_async"]

# A shell starts background jobs with SIGINT ignored, and an ignored signal stays ignored
# across exec: the `saturn` processes the tests interrupt with SIGINT would never see it.
# A handler (not SIG_IGN) here makes every child start with the default disposition.
signal.signal(signal.SIGINT, signal.default_int_handler)


def wait_for(
    condition: Callable[[], object], timeout: float = 20.0, what: str = "condition"
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :][:1] != b"Z"


def processes_carrying(needle: bytes) -> list[int]:
    """Live processes (not zombies) whose environment, as they were started, holds
    ``needle`` (a ``NAME=value`` prefix, say): this user's runs marked by saturn."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            environ = Path(f"/proc/{name}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ and pid_alive(int(name)):
            found.append(int(name))
    return found


@pytest.fixture
def saturn(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``saturn ARGS...`` in ``tmp_path`` and return the completed process."""

    def run(*args: str, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args],
            cwd=kwargs.pop("cwd", tmp_path),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )

    return run


@contextlib.contextmanager
def saturn_in_background(*args: str) -> Iterator[subprocess.Popen[str]]:
    """``saturn ARGS...`` running meanwhile (stderr piped); killed if the body leaves it."""
    proc = subprocess.Popen([*CLI, *args], stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stderr is not None and not proc.stderr.closed:
            proc.communicate()


def saturn_without(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``saturn ARGS...`` in a Python where ``module`` cannot be imported (a missing extra)."""
    code = (
        f"import sys; sys.modules[{module!r}] = None; "
        "from saturn_async.cli import main; sys.argv = ['saturn', *sys.argv[1:]]; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False
    )


@pytest.fixture
def write_job(tmp_path: Path) -> Callable[..., Path]:
    """Write a JSON job/batch file; runs may be commands or dicts."""

    def write(
        runs: list[str | dict[str, Any]],
        name: str = "job.json",
        nprocs: int = 2,
        output: str | None = None,
        **fields: Any,
    ) -> Path:
        doc: dict[str, Any] = {
            "nprocs": nprocs,
            "remote_output_path": output or str(tmp_path / "out"),
            "runs": [r if isinstance(r, dict) else {"cmd": r} for r in runs],
            **fields,
        }
        path = tmp_path / name
        path.write_text(json.dumps(doc))
        return path

    return write


@pytest.fixture(scope="session", autouse=True)
def _private_staging_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Not the shared default in $TMPDIR, which saturn refuses if an older version left
    it open to others; set before the session's clusters start their workers."""
    os.environ["SATURN_STAGING_DIR"] = str(tmp_path_factory.mktemp("staging"))


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "state"))  # the sweep state store
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    monkeypatch.delenv("SATURN_RUN_LOCAL_RANK", raising=False)
    os.environ.pop("PYTHONWARNINGS", None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; reaped either way."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount small tmpfs file systems (``size`` as mount takes it); unmounted at teardown."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        mountpoint = tmp_path / f"tmpfs-{len(mounted)}"
        mountpoint.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:  # needs root (CAP_SYS_ADMIN): nothing to install
            pytest.skip(f"cannot mount a small tmpfs: {result.stderr.decode().strip()}")
        mounted.append(mountpoint)
        return mountpoint

    yield mount
    for mountpoint in reversed(mounted):
        subprocess.run(["umount", str(mountpoint)], check=True)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Any]:
    """A ``saturn daemon`` of this test (not started); stopped by PID at teardown."""
    from daemons import Daemon

    instance = Daemon(tmp_path)
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3 server (moto_server) in its own process; yields its endpoint URL."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("moto_server")),
                "-H",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{endpoint}/moto-api/"), timeout=60, what="moto_server")
        yield endpoint
    finally:
        stop_process(proc)


BUCKET = "saturn-test"


@pytest.fixture
def s3(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty bucket on a freshly reset moto_server; the AWS variables point at it.

    Yields the bucket's URL, ``s3://saturn-test``.
    """
    request = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    request = urllib.request.Request(f"{moto_server}/{BUCKET}", method="PUT")
    with urllib.request.urlopen(request, timeout=10):
        pass
    return f"s3://{BUCKET}"


class FaultProxy:
    """Controls a running ``tests/fault_proxy.py``."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def set(self, mode: str, rate: float = 1.0) -> dict[str, Any]:
        url = f"{self.endpoint}/__fault__?mode={mode}&rate={rate}"
        with urllib.request.urlopen(url, timeout=5) as response:
            state: dict[str, Any] = json.loads(response.read())
            return state

    def counts(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.endpoint}/__fault__", timeout=5) as response:
            state: dict[str, Any] = json.loads(response.read())
            return state


@pytest.fixture
def fault_proxy(s3: str, moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of moto_server; the AWS endpoint points at it."""
    upstream = moto_server.rsplit(":", 1)[1]
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("fault_proxy.py")), upstream],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        endpoint = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        yield FaultProxy(endpoint)
    finally:
        stop_process(proc)
        if proc.stdout is not None:
            proc.stdout.close()


class DaskCluster:
    """A real ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, or each on a
    test host of tests/hosts.py (``host=``)."""

    def __init__(self, directory: Path, host: Any = None) -> None:
        self.directory = directory
        self.host = host
        self.scheduler_file = directory / "scheduler.json"
        self.workers: list[subprocess.Popen[bytes]] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self.address = ""

    def _spawn(self, *args: str, log: str, host: Any = None) -> subprocess.Popen[bytes]:
        command = [str(Path(sys.executable).with_name("dask")), *args]
        if host is not None:
            proc: subprocess.Popen[bytes] = host.popen(
                command, self.directory / log, cwd=self.directory
            )
        else:
            with (self.directory / log).open("ab") as out:
                proc = subprocess.Popen(
                    command, stdout=out, stderr=subprocess.STDOUT, cwd=self.directory
                )
        self._procs.append(proc)
        return proc

    def start_scheduler(self) -> None:
        ip = self.host.address if self.host is not None else "127.0.0.1"
        self.scheduler = self._spawn(
            "scheduler",
            "--host", ip,
            "--port", "0",
            "--scheduler-file", str(self.scheduler_file),
            "--dashboard-address", f"{ip}:0",
            log="scheduler.log",
            host=self.host,
        )  # fmt: skip
        info = wait_for(self._scheduler_info, timeout=60, what="dask scheduler file")
        self.address = info["address"]

    def _scheduler_info(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.scheduler_file.read_text()))
        except (OSError, ValueError):
            return None

    def add_worker(
        self, slots: int = 2, nanny: bool = True, host: Any = None
    ) -> subprocess.Popen[bytes]:
        """One worker process (behind a nanny unless ``nanny=False``) with ``slots`` threads,
        on ``host`` (of tests/hosts.py) if given."""
        index = len(self.workers)
        ip = host.address if host is not None else "127.0.0.1"
        proc = self._spawn(
            "worker",
            "--scheduler-file", str(self.scheduler_file),
            "--host", ip,
            "--nthreads", str(slots),
            "--resources", f"saturn_slots={slots}",
            "--dashboard-address", f"{ip}:0",
            "--local-directory", str(self.directory / f"worker-{index}"),
            "--name", f"worker-{index}",
            "--nanny" if nanny else "--no-nanny",
            log=f"worker-{index}.log",
            host=host,
        )  # fmt: skip
        self.workers.append(proc)
        return proc

    def wait_for_workers(self, count: int) -> None:
        from distributed import Client

        with Client(self.address, timeout="30s") as client:
            client.wait_for_workers(count, timeout=60)

    def stop(self) -> None:
        for proc in reversed(self._procs):
            stop_process(proc)


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """A scheduler and two workers (2 threads, saturn_slots=2 each), shared by the session."""
    cluster = DaskCluster(tmp_path_factory.mktemp("dask"))
    try:
        cluster.start_scheduler()
        cluster.add_worker()
        cluster.add_worker()
        cluster.wait_for_workers(2)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def own_dask_cluster(tmp_path: Path) -> Iterator[DaskCluster]:
    """A scheduler with no workers yet, for tests that kill workers."""
    cluster = DaskCluster(tmp_path / "dask")
    cluster.directory.mkdir()
    try:
        cluster.start_scheduler()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """A real local Ray (2 CPUs, 2 GPUs declared: Ray hands their ids out in
    CUDA_VISIBLE_DEVICES without any being there; no dashboard) that ``saturn``
    subprocesses connect to."""
    import tempfile

    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    # Short: Ray puts Unix sockets under it, and their paths are limited to 107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    context = ray.init(
        num_cpus=2, num_gpus=2, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False
    )
    try:
        yield str(context.address_info["gcs_address"])
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real one-node Slurm (tests/slurm.py: munged, slurmctld, slurmd on this machine),
    shared by the session; ``SLURM_CONF`` points at it."""
    from slurm import running_cluster

    with running_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


@pytest.fixture
def fake_kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The tests' Kubernetes API server (tests/fake_kube.py); $KUBECONFIG points at it."""
    from fake_kube import FakeKube, serve

    kube = FakeKube()
    url, server = serve(kube)
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig(tmp_path, url)))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    try:
        yield kube
    finally:
        server.shutdown()
        server.server_close()
