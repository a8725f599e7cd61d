"""Sweeps across the test hosts of tests/hosts.py, and what must hold after a fault.

S3 is a moto_server on host A (on an address of its own, so it can be cut off without
cutting host A). Every run appends ``start TASK HOST PID TIME`` to a marks file when
it starts and ``done TASK HOST PID TIME`` when its command completes, and prints
``attempt PID`` while it works, so a second completion, or a log holding two attempts,
is visible.
moto_server logs every request with the client's address: who wrote what, in order.
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import yaml

from conftest import CLI, _answers, wait_for
from hosts import Host, Network
from saturn_async.storage.s3 import S3Storage

BUCKET = "saturn-test"
S3_PORT = 9000
S3_HOST = 10
"""S3 listens on 198.18.N.10, a second address of host A."""
TASKS = 16
TICKS = 8
"""A run's work: this many ``attempt PID`` lines, 0.5 s apart."""
_REQUEST = re.compile(r'^(\S+) - - \[[^]]*\] "(PUT|POST|DELETE) /([^ ?]+)')


@dataclass
class Hosts:
    network: Network
    a: Host
    b: Host
    c: Host
    directory: Path
    endpoint: str
    moto_log: Path
    fault_at: float = 0.0
    fault_wall: float = 0.0
    ran_twice: int = 0
    """Tasks whose command ran to its end on a host whose attempt was then lost."""
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def root(self) -> str:
        return f"s3://{BUCKET}/sweep"

    @property
    def marks(self) -> Path:
        return self.directory / "marks"

    def saturn(self, *args: str, timeout: float = 60) -> Any:
        """``saturn ARGS`` on host A (the client's host)."""
        return self.a.run([*CLI, *args], timeout=timeout, cwd=self.directory)

    def figure(self, what: str) -> None:
        """Seconds from the fault to ``what``, kept for the report."""
        self.figures[what] = round(time.monotonic() - self.fault_at, 1)


def three_hosts(directory: Path) -> Hosts:
    """Hosts A, B and C on one network, moto_server on A with an empty bucket; the
    AWS variables (set by the caller from ``aws_env``) point at it."""
    network = Network()
    try:
        s3_address = network.address_of(S3_HOST)
        a = network.add_host("hosta", s3_address)
        b = network.add_host("hostb")
        c = network.add_host("hostc")
        for host in (a, b, c):
            staging = directory / host.name / "staging"
            staging.mkdir(parents=True, mode=0o700)
            host.env["SATURN_STAGING_DIR"] = str(staging)
        endpoint = f"http://{s3_address}:{S3_PORT}"
        moto_log = directory / "moto.log"
        moto = str(Path(sys.executable).with_name("moto_server"))
        a.popen([moto, "-H", s3_address, "-p", str(S3_PORT)], moto_log)
        wait_for(lambda: _answers(f"{endpoint}/moto-api/"), timeout=60, what="moto_server")
        request = urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT")
        with urllib.request.urlopen(request, timeout=10):
            pass
    except BaseException:
        network.close()
        raise
    return Hosts(network, a, b, c, directory, endpoint, moto_log)


def aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }


FAULTS = ["host_lost", "partition_30s", "s3_unreachable_30s"]
OUTAGE = 30
"""Seconds host C's link is down, or S3 is cut off."""


def start_sweep(hosts: Hosts, executor: dict[str, Any], grace: float = 2) -> Any:
    """``saturn run`` on host A of a sweep of marked_tasks, in the background; returns
    once runs are going on host C, the moment the fault is injected."""
    doc = {
        "name": "lr-sweep",
        "tasks": marked_tasks(hosts.marks),
        "nprocs": 2,
        "batch_size": 2,
        "executor": executor,
        "results": {"class_spec": "S3", "url": hosts.root},
    }
    path = hosts.directory / "run.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    args = ["run", str(path), "-q", "--grace", str(grace), "--log-chunk-minutes", "0.02"]
    run = hosts.a.popen([*CLI, *args], hosts.directory / "run.log", cwd=hosts.directory)
    wait_for(lambda: started_on(hosts.marks, "hostc"), timeout=180, what="runs on host C")
    hosts.fault_at, hosts.fault_wall = time.monotonic(), time.time()
    return run


def inject(hosts: Hosts, fault: str) -> None:
    """One of FAULTS, on host C (or, for S3, on hosts B and C) from now."""
    if fault == "host_lost":
        in_flight = started_on(hosts.marks, "hostc")
        hosts.c.kill_everything()
        # C's runs in flight run again on B, once their leases expired.
        wait_for(
            lambda: in_flight <= started_on(hosts.marks, "hostb"),
            timeout=300,
            what="C's runs started again on B",
        )
    elif fault == "partition_30s":
        hosts.c.link(up=False)
        time.sleep(OUTAGE)  # the fault's length, not a wait for something to happen
        hosts.c.link(up=True)
        hosts.figure("link up")
    else:
        s3_address = hosts.network.address_of(S3_HOST)
        for host in (hosts.b, hosts.c):
            host.block(s3_address)
        time.sleep(OUTAGE)  # the fault's length
        for host in (hosts.b, hosts.c):
            host.block(s3_address, blocked=False)
        hosts.figure("S3 reachable again")


def finish(hosts: Hosts, run: Any, timeout: float = 400) -> dict[str, Any]:
    """Wait for ``saturn run`` to end, check assert_sweep_outcome; its report."""
    run.wait(timeout=timeout)
    hosts.figure("finished")
    on_c = started_on(hosts.marks, "hostc")
    again = [when for what, task, host, when in marks_of(hosts.marks)
             if what == "start" and task in on_c and host != "hostc"]  # fmt: skip
    if again:
        hosts.figures["C's runs started elsewhere"] = round(min(again) - hosts.fault_wall, 1)
    return assert_sweep_outcome(hosts, run.returncode, (hosts.directory / "run.log").read_text())


def marked_tasks(marks: Path, count: int = TASKS) -> list[dict[str, Any]]:
    me = "$SATURN_RUN_REMOTE_OUTPUT_PATH $(hostname) $$ $(date +%s.%N)"
    command = (
        f'echo "start {me}" >> {marks}; '
        f"for i in $(seq {TICKS}); do echo attempt $$; sleep 0.5; done; "
        f'echo "done {me}" >> {marks}'
    )
    return [{"name": f"t{i:02}", "command": command} for i in range(count)]


def marks_of(marks: Path) -> list[tuple[str, str, str, float]]:
    """(``start`` or ``done``, task name, host, Unix time) for each line of the marks file."""
    found = []
    for line in marks.read_text().splitlines() if marks.exists() else []:
        what, location, host, _pid, when = line.split()
        found.append((what, location.rsplit("/", 1)[-1], host, float(when)))
    return found


def started_on(marks: Path, host: str) -> set[str]:
    return {task for what, task, on, _ in marks_of(marks) if what == "start" and on == host}


def done_on(marks: Path) -> dict[str, list[str]]:
    """The hosts each task's command completed on, once per completion."""
    done: dict[str, list[str]] = {}
    for what, task, host, _ in marks_of(marks):
        if what == "done":
            done.setdefault(task, []).append(host)
    return done


def s3_objects(root: str) -> dict[str, bytes]:
    async def main() -> dict[str, bytes]:
        async with S3Storage() as storage:
            listed = await storage.list(root)
            found = {}
            for item in listed:
                data = await storage.get(f"{root}/{item.name}")
                if data is not None:
                    found[item.name] = data
            return found

    return anyio.run(main)


def writes(moto_log: Path) -> list[tuple[str, str]]:
    """(client address, key) of every write moto_server answered, in its order."""
    found = []
    for line in moto_log.read_text(errors="replace").splitlines():
        match = _REQUEST.match(line)
        if match:
            found.append((match[1], match[3]))
    return found


def assert_sweep_outcome(hosts: Hosts, returncode: int, output: str) -> dict[str, Any]:
    """What must hold after any fault, given how ``saturn run`` ended (its exit code and
    output); returns ``saturn status --json``."""
    tasks = [f"t{i:02}" for i in range(TASKS)]
    status = hosts.saturn("status", "--name", "lr-sweep", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    objects = s3_objects(hosts.root)
    lost = {Path(run["path"]).name for run in report["lost_runs"]}
    # Every task ends with exactly one status (one object, one outcome), or is reported
    # lost; the sweep's own verdict agrees.
    for task in tasks:
        if task not in lost:
            assert objects.get(f"{task}/status") == b"success\n", (task, report)
    assert report["succeeded"] + len(lost) == TASKS, report
    assert report["not_finished"] == 0 and report["failed"] == 0, report
    assert returncode == (0 if not lost else 1), output
    # No task completes twice: one host writes its status, the one holding its lease
    # last; another host may have run the command to its end too only if that attempt
    # was lost with its host (it wrote no status), and then only after its lease expired.
    written = writes(hosts.moto_log)
    hostname = {host.address: host.name for host in (hosts.a, hosts.b, hosts.c)}
    assert {hosts.b.address, hosts.c.address} <= {client for client, _ in written}, written[:5]
    prefix = f"{BUCKET}/sweep/"
    status_by: dict[str, set[str]] = {}
    for client, key in written:
        if key.startswith(prefix) and key.endswith("/status"):
            status_by.setdefault(key[len(prefix) : -len("/status")], set()).add(hostname[client])
    done = done_on(hosts.marks)
    for task in set(tasks) - lost:
        assert len(status_by[task]) == 1, (task, status_by[task])
        assert status_by[task] <= set(done[task]), (task, status_by[task], done[task])
        lease = json.loads(objects[f"{task}/.saturn-lease"])
        assert {lease["host"]} == status_by[task] and lease.get("released"), (task, lease)
        hosts.ran_twice += len(done[task]) - 1
    # No output holds two attempts.
    for task in set(tasks) - lost:
        chunks = sorted(name for name in objects if name.startswith(f"{task}/log/"))
        log = b"".join(objects[name] for name in chunks).decode()
        attempts = set(log.splitlines())
        assert len(attempts) == 1 and len(log.splitlines()) == TICKS, (task, log)
    # Nothing of a host writes under a task once another host took its lease over (which
    # saturn does only once the lease expired).
    owner: dict[str, str] = {}
    gone: dict[str, set[str]] = {}
    for client, key in written:
        if not key.startswith(prefix) or "/" not in key[len(prefix) :]:
            continue  # the ledger, written by every host
        task, name = key[len(prefix) :].split("/", 1)
        assert client not in gone.get(task, set()), f"{client} wrote {key} after losing it"
        if name == ".saturn-lease" and owner.get(task, client) != client:
            gone.setdefault(task, set()).add(owner[task])
        if name == ".saturn-lease":
            owner[task] = client
    return dict(report)
