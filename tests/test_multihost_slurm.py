"""A Slurm sweep across three hosts (network namespaces, tests/hosts.py) with one fault.

munged in the root namespace (its socket is a path, which every namespace reaches),
slurmctld, ``saturn run`` and S3 (moto) on host A; slurmd on hosts B and C as nodes
``hostb`` and ``hostc`` (``NodeAddr`` their addresses, so no name needs to resolve), 2
CPUs each; results and batch files on S3, ``--requeue``. Each test waits until runs
are going on host C, then injects one of multihost.FAULTS and checks
multihost.assert_sweep_outcome. Host C lost: Slurm ends C's array task NODE_FAIL after
``SlurmdTimeout``, requeues it onto B, and there it skips the runs with a status. The
times to detect and to finish are printed (docs/executors.md, "Many hosts").
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from conftest import wait_for
from multihost import FAULTS, Hosts, aws_env, finish, inject, start_sweep, three_hosts
from slurm import SlurmCluster, missing_prerequisite, node_line

SLURMD_TIMEOUT = 10
"""Seconds without an answer from a slurmd before slurmctld sets its node DOWN."""


@pytest.fixture
def slurm_hosts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Hosts, SlurmCluster]]:
    why = missing_prerequisite()
    if why is not None:
        pytest.fail(f"Slurm tests cannot run: {why}", pytrace=False)
    hosts = three_hosts(tmp_path)
    cluster = SlurmCluster(tmp_path / "slurm")
    try:
        for name, value in aws_env(hosts.endpoint).items():
            monkeypatch.setenv(name, value)
        cluster.directory.mkdir()
        nodes = [node_line(host.name, host.address) for host in (hosts.b, hosts.c)]
        cluster.write_conf(f"hosta({hosts.a.address})", nodes, slurmd_timeout=SLURMD_TIMEOUT)
        monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
        cluster.start_munged()
        hosts.a.popen(["slurmctld", "-D", "-i"], cluster.directory / "slurmctld.out")
        for host in (hosts.b, hosts.c):
            slurmd = ["slurmd", "-D", "-N", host.name]
            host.popen(slurmd, cluster.directory / f"{host.name}.out", host_sys=True)
        for host in (hosts.b, hosts.c):
            wait_for(
                lambda h=host: cluster.node_idle(h.name), timeout=120, what=f"{host.name} idle"
            )
        yield hosts, cluster
    finally:
        hosts.network.close()
        cluster.stop()


def logged_at(cluster: SlurmCluster, text: str, after: float = 0) -> float | None:
    """When (Unix time) slurmctld first logged a line holding ``text`` after ``after``."""
    log = (cluster.directory / "slurmctld.log").read_text(errors="replace")
    for line in log.splitlines():
        if not line.startswith("["):
            continue
        stamp, _, message = line[1:].partition("] ")
        when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f").timestamp()
        if text in message and when >= after:
            return when
    return None


@pytest.mark.timeout(600)
@pytest.mark.parametrize("fault", FAULTS)
def test_fault_mid_sweep(slurm_hosts, fault):
    hosts, cluster = slurm_hosts
    executor = {
        "class_spec": "SlurmExecutor",
        "batch_files": f"{hosts.root}-batches",
        "sbatch_args": ["--requeue"],
    }
    run = start_sweep(hosts, executor)
    inject(hosts, fault)
    report = finish(hosts, run)
    requeued = logged_at(cluster, "due to failure of node hostc")
    if fault == "host_lost":
        # Slurm set C DOWN and requeued its array task (a partition of 30 s may end
        # before slurmctld gives up on C, or just after).
        assert cluster.node_state("hostc").startswith("down"), cluster.node_state("hostc")
        assert requeued is not None, "slurmctld requeued no array task of hostc"
    if requeued is not None:
        # The requeued array task ran again (on B, or on C once back), skipping the runs
        # with a status.
        log = (cluster.directory / "slurmctld.log").read_text(errors="replace")
        task = log.split(" due to failure of node hostc")[0].rsplit("requeue job ", 1)[1]
        again = logged_at(cluster, f"Allocate {task} NodeList=", after=requeued)
        assert again is not None, f"{task}, requeued, never started again"
        hosts.figures["hostc DOWN, its array task requeued"] = round(requeued - hosts.fault_wall, 1)
        hosts.figures["requeued task started"] = round(again - hosts.fault_wall, 1)
    wait_for(lambda: not cluster.queue(), timeout=60, what="an empty squeue")
    print(f"\n{fault}: {hosts.figures}; lost: {report['lost']}; ran twice: {hosts.ran_twice}")
