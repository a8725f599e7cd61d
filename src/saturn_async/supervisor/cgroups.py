"""Cgroups of capped runs: one per run, made, joined and removed by saturn.

Where: the memory controller's hierarchy, cgroup v2 where the unified hierarchy has it
(``memory.max``, ``memory.swap.max`` 0), else v1 (``memory.limit_in_bytes``, and
``memory.memsw.limit_in_bytes`` where swap is accounted; ``cpuacct`` for CPU time).
``$SATURN_CGROUP_ROOT`` names another directory of the memory hierarchy to work under (a
subtree delegated to this user, say); CPU time then comes from rusage on v1.

Naming, so that only saturn's own are ever removed: ``<root>/saturn_async/<pid namespace>-
<pid>-<start ticks>-<n>/run-<k>``, one such directory per supervisor. One of this pid
namespace whose process is gone (a supervisor killed by SIGKILL) is a leftover: the next
supervisor to make its own removes it, run by run, each only when empty of processes.
(Another namespace's pids mean nothing here: its directories are left alone.)

A run joins its cgroup itself, before its command: the shell writes its own pid into
``cgroup.procs`` first (:attr:`RunCgroup.prelude`), so nothing the command allocates is
charged elsewhere, and the supervisor is never in a run's cgroup.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shlex
import signal
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from saturn_async.supervisor.process import start_ticks

ROOT_ENV = "SATURN_CGROUP_ROOT"
PARENT = "saturn_async"
_SUPERVISOR = re.compile(r"^(?P<ns>[0-9]+)-(?P<pid>[0-9]+)-(?P<ticks>[0-9]+)-[0-9]+$")
_RUN = re.compile(r"^run-[0-9]+$")
_supervisors = itertools.count(1)
# Polling a run's cgroup until its last process is gone, and for how long at most.
_POLL_FIRST, _POLL_MAX, _EMPTY_WAIT = 0.002, 0.1, 5.0


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """Where saturn makes its cgroups: under ``memory`` (and ``cpuacct``, v1)."""

    version: int
    memory: str
    cpuacct: str | None = None


def find_hierarchy() -> Hierarchy | str:
    """The hierarchy to put capped runs in, or why there is none to use."""
    override = os.environ.get(ROOT_ENV)
    if override:
        version = _version_of(override)
        if version is None:
            return f"{override} (${ROOT_ENV}) is not a cgroup directory with the memory controller"
        found = Hierarchy(version, override)
    else:
        mounted = _mounted()
        if mounted is None:
            return "no cgroup hierarchy with the memory controller is mounted"
        found = mounted
    if not os.access(found.memory, os.W_OK):
        return f"cannot create cgroups in {found.memory} (not root, and not delegated to this user)"
    return found


def _version_of(path: str) -> int | None:
    if os.access(os.path.join(path, "memory.limit_in_bytes"), os.F_OK):
        return 1
    controllers = _read(os.path.join(path, "cgroup.controllers"))
    return 2 if controllers is not None and "memory" in controllers.split() else None


def _mounted() -> Hierarchy | None:
    """The v2 mount when its root has the memory controller, else the v1 memory mount."""
    v1: dict[str, str] = {}
    unified = None
    for line in (_read("/proc/self/mountinfo") or "").splitlines():
        fields = line.split(" - ", 1)
        if len(fields) != 2:
            continue
        mount_point = fields[0].split()[4].replace("\\040", " ")
        fstype, _source, options = [*fields[1].split(), "", ""][:3]
        if fstype == "cgroup2" and _version_of(mount_point) == 2:
            unified = mount_point
        elif fstype == "cgroup":
            for controller in ("memory", "cpuacct"):
                if controller in options.split(","):
                    v1.setdefault(controller, mount_point)
    if unified is not None:
        return Hierarchy(2, unified)
    if "memory" in v1:
        return Hierarchy(1, v1["memory"], v1.get("cpuacct"))
    return None


class SupervisorCgroups:
    """One supervisor's cgroups: its own directory in each hierarchy, the runs' below."""

    def __init__(self, hierarchy: Hierarchy, report: Callable[[str], None]) -> None:
        self.hierarchy = hierarchy
        self.report = report
        pid = os.getpid()
        self.name = f"{_pid_namespace()}-{pid}-{start_ticks(pid)}-{next(_supervisors)}"
        roots = [hierarchy.memory, hierarchy.cpuacct]
        self.parents = [os.path.join(root, PARENT) for root in roots if root is not None]
        self.dirs = [os.path.join(parent, self.name) for parent in self.parents]
        self._runs = itertools.count(1)
        self._opened = False

    def open(self) -> None:
        """Make this supervisor's directories, after removing dead supervisors' leftovers
        (OSError when they cannot be made)."""
        if self._opened:
            return
        for parent in self.parents:
            remove_leftovers(parent)
        for path in [*self.parents, *self.dirs]:
            if self.hierarchy.version == 2:
                _enable_memory(os.path.dirname(path))
            os.makedirs(path, exist_ok=True)
        if self.hierarchy.version == 2:
            _enable_memory(self.dirs[0])
        self._opened = True

    def run_cgroup(self, limit: int, oom_score_adj: int) -> RunCgroup:
        """A new run's cgroup, capped at ``limit`` bytes without swap (OSError when it
        cannot be made; then none is left)."""
        self.open()
        name = f"run-{next(self._runs)}"
        cgroup = RunCgroup(
            self.hierarchy.version, [os.path.join(d, name) for d in self.dirs], oom_score_adj
        )
        try:
            for path in cgroup.dirs:
                os.mkdir(path)
            cgroup.cap(limit)
        except OSError:
            cgroup.remove_dirs()
            raise
        return cgroup

    def close(self) -> None:
        """Remove this supervisor's directories (its runs' are gone by now)."""
        if not self._opened:
            return
        for path in self.dirs:
            try:
                os.rmdir(path)
            except OSError as exc:
                self.report(f"could not remove the cgroup {path}: {exc.strerror}")


@dataclass(frozen=True, slots=True)
class TreeUsage:
    """What a run's cgroup counted, for its whole process tree."""

    oom_kills: int
    peak_bytes: int | None
    cpu_seconds: tuple[float, float] | None
    """User and system CPU seconds (None without a CPU accounting controller)."""


class RunCgroup:
    """One run's cgroup, in each hierarchy saturn uses (memory first)."""

    def __init__(self, version: int, dirs: list[str], oom_score_adj: int) -> None:
        self.version = version
        self.dirs = dirs
        joins = [f"echo $$ >{shlex.quote(d + '/cgroup.procs')}" for d in dirs]
        joins.append(f"echo {oom_score_adj} >/proc/self/oom_score_adj")
        self.prelude = " && ".join(joins) + " || exit 127; "
        """Shell text that moves the run's shell into the cgroup before its command."""

    def cap(self, limit: int) -> None:
        memory = self.dirs[0]
        if self.version == 2:
            _write(f"{memory}/memory.max", limit)
            if os.access(f"{memory}/memory.swap.max", os.F_OK):
                _write(f"{memory}/memory.swap.max", 0)
            return
        _write(f"{memory}/memory.limit_in_bytes", limit)
        if os.access(f"{memory}/memory.memsw.limit_in_bytes", os.F_OK):
            _write(f"{memory}/memory.memsw.limit_in_bytes", limit)

    async def finish(self, report: Callable[[str], None]) -> TreeUsage:
        """After the run's main process is reaped: SIGKILL what is left in the cgroup
        (processes that left the run's process group), read the usage, remove it."""
        with anyio.CancelScope(shield=True):
            delay = _POLL_FIRST
            with anyio.move_on_after(_EMPTY_WAIT):
                while members := self.members():
                    for pid in members:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    await anyio.sleep(delay)
                    delay = min(delay * 2, _POLL_MAX)
        usage = self.usage()
        try:
            self.remove_dirs()
        except OSError as exc:
            report(f"could not remove the run's cgroup {exc.filename}: {exc.strerror}")
        return usage

    def members(self) -> list[int]:
        text = _read(f"{self.dirs[0]}/cgroup.procs") or ""
        return [int(pid) for pid in text.split()]

    def usage(self) -> TreeUsage:
        memory = self.dirs[0]
        if self.version == 2:
            events = _keyed(_read(f"{memory}/memory.events"))
            peak = _number(_read(f"{memory}/memory.peak"))
            cpu = _keyed(_read(f"{memory}/cpu.stat"))
            user, system = cpu.get("user_usec"), cpu.get("system_usec")
            seconds = None
            if user is not None and system is not None:
                seconds = (user / 1e6, system / 1e6)
            return TreeUsage(events.get("oom_kill", 0), peak, seconds)
        oom = _keyed(_read(f"{memory}/memory.oom_control")).get("oom_kill", 0)
        peak = _number(_read(f"{memory}/memory.max_usage_in_bytes"))
        seconds = None
        if len(self.dirs) > 1:
            user = _number(_read(f"{self.dirs[1]}/cpuacct.usage_user"))
            system = _number(_read(f"{self.dirs[1]}/cpuacct.usage_sys"))
            if user is not None and system is not None:
                seconds = (user / 1e9, system / 1e9)
        return TreeUsage(oom, peak, seconds)

    def remove_dirs(self) -> None:
        """Remove the cgroup (OSError, naming the directory, when one stays)."""
        for path in self.dirs:
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(path)


def remove_leftovers(parent: str) -> None:
    """Remove the cgroups under ``parent`` of supervisors that are gone: each run's when
    it has no process left, then the supervisor's when it is empty. Nothing else."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    namespace = str(_pid_namespace())
    for name in names:
        match = _SUPERVISOR.match(name)
        if (
            match is None
            or match["ns"] != namespace
            or start_ticks(int(match["pid"])) == int(match["ticks"])
        ):
            continue
        path = os.path.join(parent, name)
        try:
            runs = [run for run in os.listdir(path) if _RUN.match(run)]
        except OSError:
            continue
        for run in runs:
            if not (_read(os.path.join(path, run, "cgroup.procs")) or "").strip():
                _rmdir_quietly(os.path.join(path, run))
        _rmdir_quietly(path)


def _pid_namespace() -> int:
    """This process's pid namespace (its inode), which gives pids their meaning."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def _rmdir_quietly(path: str) -> None:
    # Busy (it still has processes, or a run's cgroup): the next start tries again.
    with contextlib.suppress(OSError):
        os.rmdir(path)


def _enable_memory(path: str) -> None:
    """Let ``path``'s children use the memory controller (v2), unless they already do."""
    control = os.path.join(path, "cgroup.subtree_control")
    if "memory" not in (_read(control) or "").split():
        with open(control, "w") as f:
            f.write("+memory")


def _write(path: str, value: int) -> None:
    with open(path, "w") as f:
        f.write(str(value))


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _number(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _keyed(text: str | None) -> dict[str, int]:
    """``name value`` lines (memory.events, cpu.stat, memory.oom_control) as a dict."""
    pairs = (line.split() for line in (text or "").splitlines())
    return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].isdigit()}
