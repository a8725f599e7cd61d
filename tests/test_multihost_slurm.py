"""A Slurm sweep across three hosts (network namespaces, tests/hosts.py) with one fault.

munged in the root namespace (its socket is a path, which every namespace reaches),
slurmctld, ``saturn run`` and S3 (moto) on host A; slurmd on hosts B and C as nodes
``hostb`` and ``hostc`` (``NodeAddr`` their addresses, so no name needs to resolve), 2
CPUs each; results and batch files on S3, ``--requeue``. Each test waits until runs
are going on host C, then injects one of multihost.FAULTS and checks
multihost.assert_sweep_outcome. Host C lost: Slurm ends C's array task NODE_FAIL after
``SlurmdTimeout`` (short here), requeues it onto B, and there it skips the runs with a
status. A partition or S3 cut off for 30 s: Slurm, with its default ``SlurmdTimeout``,
keeps node C and its array task. The times to detect and to finish are printed
(docs/executors.md, "Many hosts").
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from conftest import wait_for
from multihost import FAULTS, OUTAGE, Hosts, aws_env, finish, inject, start_sweep, three_hosts
from slurm import SlurmCluster, missing_prerequisite, node_line

SLURMD_TIMEOUT = {"host_lost": 10}
"""Seconds without an answer from a slurmd before slurmctld sets its node DOWN: short
where host C is lost, else Slurm's default (300 s), which a 30 s outage stays under."""
DEFAULT_SLURMD_TIMEOUT = 300
REQUEUED = "due to failure of node hostc"
"""slurmctld's line when it requeues an array task of the lost node."""


@pytest.fixture(params=FAULTS)
def fault(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def slurm_hosts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> Iterator[tuple[Hosts, SlurmCluster]]:
    why = missing_prerequisite()
    if why is not None:
        pytest.fail(f"Slurm tests cannot run: {why}", pytrace=False)
    timeout = SLURMD_TIMEOUT.get(fault, DEFAULT_SLURMD_TIMEOUT)
    hosts = three_hosts(tmp_path)
    cluster = SlurmCluster(tmp_path / "slurm")
    try:
        for name, value in aws_env(hosts.endpoint).items():
            monkeypatch.setenv(name, value)
        cluster.directory.mkdir()
        nodes = [node_line(host.name, host.address) for host in (hosts.b, hosts.c)]
        cluster.write_conf(f"hosta({hosts.a.address})", nodes, slurmd_timeout=timeout)
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


def logged_at(cluster: SlurmCluster, pattern: str, after: float = 0) -> float | None:
    """When (Unix time) slurmctld first logged a line matching ``pattern`` (a regular
    expression) after ``after``."""
    log = (cluster.directory / "slurmctld.log").read_text(errors="replace")
    for line in log.splitlines():
        if not line.startswith("["):
            continue
        stamp, _, message = line[1:].partition("] ")
        when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f").timestamp()
        if re.search(pattern, message) and when >= after:
            return when
    return None


def requeued_task(cluster: SlurmCluster) -> str | None:
    """``JobId=1_1(3)``, the array task of hostc that slurmctld requeued, if it did."""
    log = (cluster.directory / "slurmctld.log").read_text(errors="replace")
    match = re.search(rf"requeue job (\S+) {REQUEUED}", log)
    return match[1] if match else None


@pytest.mark.timeout(600)
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
    wait_for(lambda: not cluster.queue(), timeout=180, what="an empty squeue")
    task = requeued_task(cluster)
    if fault != "host_lost":
        # Under SlurmdTimeout, Slurm kept node C and let its array task finish there.
        assert task is None, f"{task} requeued, though hostc was cut off for {OUTAGE} s only"
        assert not cluster.node_state("hostc").startswith("down"), cluster.node_state("hostc")
    else:
        assert cluster.node_state("hostc").startswith("down"), cluster.node_state("hostc")
        assert task is not None, "slurmctld requeued no array task of hostc"
        requeued = logged_at(cluster, re.escape(f"requeue job {task} {REQUEUED}"))
        assert requeued is not None
        # Started again (on B) by the main scheduler or by backfill, which log it apart.
        started = rf"(Allocate {re.escape(task)} NodeList=|_start_job: Started {re.escape(task)} )"
        again = logged_at(cluster, started, after=requeued)
        assert again is not None, f"{task}, requeued, never started again"
        hosts.figures["hostc DOWN, its array task requeued"] = round(requeued - hosts.fault_wall, 1)
        hosts.figures["requeued task started"] = round(again - hosts.fault_wall, 1)
    print(f"\n{fault}: {hosts.figures}; lost: {report['lost']}; ran twice: {hosts.ran_twice}")
