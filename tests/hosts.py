"""Test hosts as Linux network namespaces: each has its own address, hostname and link.

A :class:`Network` is a bridge in the root namespace with an address of its own (the
test process talks to the hosts through it) and, per :class:`Host`, a namespace joined
to the bridge by a veth pair. Addresses come from 198.18.0.0/15 (RFC 2544, used by no
real network): one /24 per test session, ``198.18.N.1`` for the first host, ``.2`` for
the next, ..., ``.254`` for the bridge. Processes start inside a host with
``ip netns exec NS unshare --uts`` (their own hostname, as on separate machines, so
saturn's leases tell the hosts apart); they are stopped by PID. Names carry a token of
the session, so parallel runs do not clash. :meth:`Network.close` removes everything
the network made, processes included. Needs root and ``ip`` (Debian: iproute2).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from sweeps import freeze_then_kill

_PREFIX = "198.18"
_BRIDGE_HOST = 254


def _ip(*args: str, netns: str | None = None) -> str:
    command = ["ip", *(["netns", "exec", netns, "ip"] if netns else []), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")
    return done.stdout


def _free_subnet() -> int:
    """A third octet N whose 198.18.N.0/24 no interface of this machine uses."""
    used = _ip("-4", "-o", "addr")
    for _ in range(100):
        octet = secrets.randbelow(250) + 1
        if f" {_PREFIX}.{octet}." not in used:
            return octet
    raise RuntimeError(f"no free /24 left in {_PREFIX}.0.0/16")


def require_network_namespaces() -> None:
    """Fail the test, in one line, where namespaces cannot be made here."""
    if os.geteuid() != 0:
        pytest.fail("multi-host tests make network namespaces: they need root", pytrace=False)
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux"), ("nsenter", "util-linux")):
        if shutil.which(tool) is None:
            pytest.fail(f"multi-host tests need `{tool}`: apt-get install {package}", pytrace=False)


class Host:
    """One namespace: ``name`` is also its hostname, ``address`` its IPv4 address."""

    def __init__(self, network: Network, name: str, address: str) -> None:
        self.network = network
        self.name = name
        self.address = address
        self.netns = f"{network.token}-{name}"
        self.outer = f"{network.token}{name}"  # the veth end on the bridge
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env: dict[str, str] = {}
        """Set (over the test's environment) for what starts here."""

    def _environment(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.env and "env" not in kwargs:
            kwargs["env"] = {**os.environ, **self.env}
        return kwargs

    def command(self, args: Sequence[str], host_sys: bool = False) -> list[str]:
        """``args`` as a command line that runs them inside this host. ``ip netns exec``
        mounts a sysfs of the namespace over /sys, which hides /sys/fs/cgroup: with
        ``host_sys``, only the network namespace is entered (``nsenter --net``), and /sys
        stays the machine's (slurmd needs its cgroups)."""
        wrapper = 'hostname "$0" && exec "$@"'
        enter = (["nsenter", f"--net=/run/netns/{self.netns}"] if host_sys
                 else ["ip", "netns", "exec", self.netns])  # fmt: skip
        return [*enter, "unshare", "--uts", "sh", "-c", wrapper, self.name, *args]

    def popen(
        self, args: Sequence[str], log: Path, host_sys: bool = False, **kwargs: Any
    ) -> subprocess.Popen[bytes]:
        """Start ``args`` here, output appended to ``log``; stopped at teardown."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                self.command(args, host_sys), stdout=out, stderr=subprocess.STDOUT,
                **self._environment(kwargs),
            )  # fmt: skip
        self.procs.append(proc)
        return proc

    def run(self, args: Sequence[str], timeout: float = 60, **kwargs: Any) -> Any:
        """Run ``args`` here to the end; the CompletedProcess (text)."""
        return subprocess.run(
            self.command(args), capture_output=True, text=True, timeout=timeout, check=False,
            **self._environment(kwargs),
        )  # fmt: skip

    def pids(self) -> list[int]:
        """Every process in this host's namespace."""
        listed = subprocess.run(
            ["ip", "netns", "pids", self.netns], capture_output=True, text=True, check=False
        )
        return [int(pid) for pid in listed.stdout.split()]

    def kill_everything(self) -> list[int]:
        """SIGKILL every process of this host, as when the machine is lost: all are
        stopped first (until no new one appears), so none reacts to another's death."""
        stopped = freeze_then_kill(self.pids)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        return stopped

    def link(self, up: bool) -> None:
        """Cut (``up=False``) or restore this host's link: its packets are dropped
        silently while it is down, as in a partition."""
        _ip("link", "set", self.outer, "up" if up else "down")

    def block(self, address: str, blocked: bool = True) -> None:
        """Make ``address`` unreachable from this host (or, ``blocked=False``, reachable
        again): a blackhole route, so what this host sends there is discarded."""
        _ip("route", "add" if blocked else "del", "blackhole", f"{address}/32", netns=self.netns)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.kill_everything()  # what the host's processes left behind
        with contextlib.suppress(RuntimeError):
            _ip("netns", "delete", self.netns)  # its end of the veth pair, and so both
        with contextlib.suppress(RuntimeError):
            _ip("link", "delete", self.outer)  # left if the host was made only in part


class Network:
    """A bridge and the hosts on it; :meth:`close` removes all of it."""

    def __init__(self) -> None:
        require_network_namespaces()
        self.token = f"st{secrets.token_hex(3)}"
        self.bridge = f"{self.token}br"
        self.octet = _free_subnet()
        self.hosts: list[Host] = []
        self.cleanups: list[str] = []
        """Directories the hosts' programs made (Ray's temp dirs), removed at close."""
        self.address = self.address_of(_BRIDGE_HOST)
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.address}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def address_of(self, index: int) -> str:
        return f"{_PREFIX}.{self.octet}.{index}"

    def add_host(self, name: str, *extra_addresses: str) -> Host:
        """A new host ``name`` (a short word: it names its veth), ``198.18.N.(k+1)`` for the
        k-th host, with ``extra_addresses`` (of the /24) on its link too."""
        host = Host(self, name, self.address_of(len(self.hosts) + 1))
        self.hosts.append(host)
        inner = f"{self.token}{name}i"
        _ip("netns", "add", host.netns)
        _ip("link", "add", host.outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", host.netns)
        _ip("link", "set", host.outer, "master", self.bridge, "up")
        for address in (host.address, *extra_addresses):
            _ip("addr", "add", f"{address}/24", "dev", inner, netns=host.netns)
        _ip("link", "set", inner, "up", netns=host.netns)
        _ip("link", "set", "lo", "up", netns=host.netns)
        return host

    def close(self) -> None:
        for host in reversed(self.hosts):
            host.close()
        with contextlib.suppress(RuntimeError):
            _ip("link", "delete", self.bridge)
        for directory in self.cleanups:
            shutil.rmtree(directory, ignore_errors=True)
