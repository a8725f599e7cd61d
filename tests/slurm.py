"""A real one-node Slurm for the tests: munged, ``slurmctld -D`` and ``slurmd -D``.

Everything lives in one temporary directory: the munge key and socket, a generated
``slurm.conf`` (this machine as node ``NODE`` with its real CPUs, partition ``debug``,
no accounting, a short KillWait; or other nodes, as tests/test_multihost_slurm.py
writes), the daemons' state, spool and logs. ``SLURM_CONF``
points at it, so ``sbatch`` and the others on PATH (Debian's slurm-wlm, which
scripts/test installs) talk to this cluster only. The daemons are stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import pid_alive, processes_carrying, wait_for

NODE = socket.gethostname().split(".")[0]
KILL_WAIT = 2
"""Seconds between Slurm's TERM and KILL (scancel, time limits)."""
CRED_EXPIRE = 10
"""How long a requeued job waits before it may start again (Slurm's default: 120 s)."""
_COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (each socket stays bound until all are picked)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def node_line(name: str = NODE, address: str | None = None) -> str:
    """Node ``name`` (at ``address``, else found by its name) with this machine's real
    CPUs and memory, as ``slurmd -C`` describes them."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    rest = out.splitlines()[0].partition(" ")[2]
    where = f" NodeAddr={address}" if address else ""
    return f"NodeName={name}{where} {rest}"


@dataclass
class SlurmCluster:
    """One node (this machine) in partition ``debug``; ``conf`` is its slurm.conf."""

    directory: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.directory / "slurm.conf"

    def write_conf(
        self,
        controller: str = f"{NODE}(127.0.0.1)",
        nodes: Sequence[str] = (),
        slurmd_timeout: int = 30,
    ) -> None:
        """``controller`` is SlurmctldHost, ``nodes`` the NodeName lines (default: this
        machine); each slurmd has its own spool, pid file and log (``%n``: its name)."""
        d = self.directory
        node_lines = "".join(f"{line} State=UNKNOWN\n" for line in nodes or [node_line()])
        for name in ("state", "spool", "munge"):
            (d / name).mkdir(mode=0o700, exist_ok=True)
        for line in nodes or [node_line()]:
            (d / "spool" / line.split()[0].partition("=")[2]).mkdir(exist_ok=True)
        key = d / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        ctld_port, slurmd_port = _free_ports(2)
        self.conf.write_text(
            f"""ClusterName=saturntest
SlurmctldHost={controller}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge/socket,cred_expire={CRED_EXPIRE}
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd-%n.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd-%n.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
KillWait={KILL_WAIT}
MinJobAge=600
ReturnToService=2
SlurmdTimeout={slurmd_timeout}
{node_lines}PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        )

    def start(self) -> None:
        self.start_munged()
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self.start_slurmd()
        wait_for(self.node_idle, timeout=60, what=f"node {NODE} idle in sinfo")

    def start_munged(self) -> None:
        """munged's socket is a path: processes of every network namespace reach it."""
        d = self.directory
        self._spawn(
            "munged",
            [
                "munged",
                "-F",
                "--force",
                f"--key-file={d}/munge/munge.key",
                f"--socket={d}/munge/socket",
                f"--pid-file={d}/munge/munged.pid",
                f"--log-file={d}/munge/munged.log",
                f"--seed-file={d}/munge/munged.seed",
            ],
        )
        wait_for((d / "munge" / "socket").exists, timeout=30, what="munged")

    def start_slurmctld(self) -> None:
        """Started again, it reads the jobs back from its state directory."""
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])

    def start_slurmd(self) -> None:
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf)])

    def node_state(self, node: str = NODE) -> str:
        """sinfo's short state of ``node`` (``idle``, ``alloc``, ``down*``, ...)."""
        out = subprocess.run(
            ["sinfo", "-h", "-n", node, "-o", "%t"], capture_output=True, text=True, check=False
        ).stdout
        return out.strip()

    def node_idle(self, node: str = NODE) -> bool:
        return self.node_state(node) == "idle"

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.directory / f"{name}.out").open("ab")
        with log:
            self.procs[name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=self.env()
            )

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def kill(self, name: str) -> None:
        """SIGKILL one daemon (a crash) and reap it."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stepds(self) -> list[int]:
        """The pids of this cluster's slurmstepd processes (they carry its SLURM_CONF)."""
        marked = processes_carrying(f"\0SLURM_CONF={self.conf}\0".encode())
        return [pid for pid in marked if _comm(pid) == "slurmstepd"]

    def scontrol(self, *args: str) -> str:
        done = subprocess.run(["scontrol", *args], capture_output=True, text=True, check=True)
        return done.stdout

    def queue(self) -> list[str]:
        """squeue's lines for every job still known as pending or running."""
        out = subprocess.run(
            ["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, check=True
        ).stdout
        return out.splitlines()

    def stop_daemon(self, name: str) -> None:
        """SIGTERM (KILL after 20 s) one daemon, if running, and reap it."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert not pid_alive(proc.pid)

    def stop(self) -> None:
        for name in ("slurmd", "slurmctld", "munged"):
            self.stop_daemon(name)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def missing_prerequisite() -> str | None:
    """Why this machine cannot run the Slurm tests, or None."""
    if os.geteuid() != 0:
        return "not root: slurmd must run as root (scripts/test installs Slurm as root)"
    missing = [name for name in _COMMANDS if shutil.which(name) is None]
    if missing:
        return f"{', '.join(missing)} not found: run scripts/test as root to install slurm-wlm and munge"
    return None


@contextlib.contextmanager
def running_cluster(directory: Path) -> Iterator[SlurmCluster]:
    """A Slurm in ``directory`` for the session; ``SLURM_CONF`` points at it meanwhile
    (the tests' subprocesses inherit it). No root or no Slurm: the test fails saying so."""
    why = missing_prerequisite()
    if why is not None:
        pytest.fail(f"Slurm tests cannot run: {why}", pytrace=False)
    cluster = SlurmCluster(directory)
    cluster.write_conf()
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        os.environ.pop("SLURM_CONF", None)
