"""A Ray sweep across three hosts (network namespaces, tests/hosts.py) with one fault.

Ray's head node, the client and S3 (moto) on host A (the head has 1 CPU, so the
sweep's actor lives there and no batch of 2 slots does); a worker node with 2 CPUs on
each of hosts B and C; results on S3. Each test waits until runs are going on host C,
then injects one of multihost.FAULTS and checks multihost.assert_sweep_outcome.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import wait_for
from hosts import Host
from multihost import FAULTS, Hosts, aws_env, finish, inject, start_sweep, three_hosts

RAY = str(Path(sys.executable).with_name("ray"))
PORT = 6379


def start_node(host: Host, directory: Path, *args: str) -> subprocess.Popen[bytes]:
    # Short: Ray puts Unix sockets under it, and their paths are limited to 107 bytes.
    temp_dir = f"/tmp/{host.netns}"
    host.network.cleanups.append(temp_dir)
    return host.popen(
        [RAY, "start", "--block", "--disable-usage-stats", "--node-ip-address", host.address,
         "--temp-dir", temp_dir, *args],
        directory / f"ray-{host.name}.log",
    )  # fmt: skip


def alive_nodes(hosts: Hosts, address: str) -> int:
    done = hosts.a.run([RAY, "status", "--address", address], timeout=60)
    active = done.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
    return active.count("node_")


def actor_host(hosts: Hosts) -> str | None:
    """The host whose processes include the sweep's actor (titled ``ray::SweepActor``)."""
    for host in (hosts.a, hosts.b, hosts.c):
        for pid in host.pids():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::SweepActor"):
                    return host.name
    return None


@pytest.fixture
def ray_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Hosts, str]]:
    hosts = three_hosts(tmp_path)
    try:
        for name, value in aws_env(hosts.endpoint).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
        address = f"{hosts.a.address}:{PORT}"
        head = ("--head", "--port", str(PORT), "--num-cpus", "1", "--include-dashboard", "false")
        worker = ("--address", address, "--num-cpus", "2")
        roles = {hosts.a: head, hosts.b: worker, hosts.c: worker}
        nodes = {host: start_node(host, tmp_path, *args) for host, args in roles.items()}

        def all_up() -> bool:
            # `ray start` gives up on a node whose raylet took over 30 s to register (a
            # busy machine): start it again.
            for host, proc in nodes.items():
                if proc.poll() is not None:
                    nodes[host] = start_node(host, tmp_path, *roles[host])
            return alive_nodes(hosts, address) == 3

        wait_for(all_up, timeout=300, what="3 Ray nodes")
        yield hosts, address
    finally:
        hosts.network.close()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("fault", FAULTS)
def test_fault_mid_sweep(ray_hosts, fault):
    hosts, address = ray_hosts
    run = start_sweep(hosts, {"class_spec": "RayExecutor", "address": address})
    # The sweep's actor, which owns every batch task, runs on saturn run's host.
    assert actor_host(hosts) == "hosta"
    inject(hosts, fault)
    report = finish(hosts, run)
    print(f"\n{fault}: {hosts.figures}; lost: {report['lost']}; ran twice: {hosts.ran_twice}")
