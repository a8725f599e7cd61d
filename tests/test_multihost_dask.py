"""A Dask sweep across three hosts (network namespaces, tests/hosts.py) with one fault.

Scheduler, client and S3 (moto) on host A, one worker (2 threads) on each of hosts B
and C; results on S3. Each test waits until runs are going on host C, then injects one
of multihost.FAULTS, checks the invariants of multihost.assert_sweep_outcome and prints
the times to detect the fault and to finish (docs/executors.md, "Many hosts").
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from conftest import DaskCluster
from multihost import FAULTS, Hosts, aws_env, finish, inject, start_sweep, three_hosts


@pytest.fixture
def dask_hosts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Hosts, DaskCluster]]:
    hosts = three_hosts(tmp_path)
    try:
        for name, value in aws_env(hosts.endpoint).items():
            monkeypatch.setenv(name, value)
        cluster = DaskCluster(tmp_path / "dask", host=hosts.a)
        cluster.directory.mkdir()
        cluster.start_scheduler()
        cluster.add_worker(slots=2, host=hosts.b)
        cluster.add_worker(slots=2, host=hosts.c)
        cluster.wait_for_workers(2)
        yield hosts, cluster
    finally:
        hosts.network.close()


def removed_at(cluster: DaskCluster, worker: str) -> float | None:
    """When (Unix time) the scheduler removed the worker at address ``worker``, if it did."""
    for line in (cluster.directory / "scheduler.log").read_text(errors="replace").splitlines():
        if f"Remove worker addr: tcp://{worker}:" in line:
            return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


@pytest.mark.timeout(600)
@pytest.mark.parametrize("fault", FAULTS)
def test_fault_mid_sweep(dask_hosts, fault):
    hosts, cluster = dask_hosts
    executor = {"class_spec": "DaskExecutor", "scheduler_address": cluster.address}
    run = start_sweep(hosts, executor)
    inject(hosts, fault)
    report = finish(hosts, run)
    removed = removed_at(cluster, hosts.c.address)
    if removed is not None:
        hosts.figures["scheduler removed worker C"] = round(removed - hosts.fault_wall, 1)
    print(f"\n{fault}: {hosts.figures}; lost: {report['lost']}; ran twice: {hosts.ran_twice}")
