"""Slurm's own commands on PATH, run with ``anyio.run_process``: submit, follow, cancel.

Nothing here knows the executor interface: each function runs one command and parses
what it prints. The commands read ``SLURM_CONF`` (inherited) like any Slurm client.
Final states come from ``sacct`` when accounting is on, else from ``scontrol show
job``, which knows a finished job for ``MinJobAge`` seconds (300 by default).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from saturn_async.exceptions import ExecutorError, InputError

FAILED_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    }
)
"""Final states of an array task that did not complete."""
FINAL_STATES = FAILED_STATES | {"COMPLETED"}
_GONE = "Invalid job id specified"
_CANCEL_POLL = 0.5
"""What Slurm says of a job it no longer knows (older than MinJobAge, no accounting)."""
# sbatch's refusals that name a field of the executor section.
_FIELD_OF_ERROR = (
    ("partition", "$.executor.partition"),
    ("account", "$.executor.account"),
    ("time limit", "$.executor.time_limit"),
)
_RECORD_FIELD = re.compile(r"(?:^|\s)(ArrayTaskId|JobState|Restarts|ExitCode)=(\S*)")
STOP_MARGIN = 30.0
"""Seconds beyond the grace that terminating array tasks get to record their runs'
statuses before Slurm is asked to end them (TERM, then KILL after KillWait)."""


@dataclass(frozen=True)
class TaskState:
    """How one array task stands: Slurm's state, how often it was requeued, and how its
    batch script ended (``exit status:signal``)."""

    state: str
    restarts: int = 0
    exit_code: str = ""


async def _run(argv: Sequence[str], *, source: str, stdin: str | None = None) -> tuple[int, str]:
    """The exit status and stdout of a Slurm command; its stderr is in ``ExecutorError``s."""
    if shutil.which(argv[0]) is None:
        raise InputError(
            f"Slurm is not installed here: {argv[0]} is not on PATH",
            source=source,
            field="$.executor.class_spec",
        )
    done = await anyio.run_process(
        list(argv),
        input=stdin.encode() if stdin is not None else None,
        check=False,
        stderr=subprocess.PIPE,
    )
    err = done.stderr.decode(errors="replace").strip()
    if done.returncode != 0 and _GONE not in err:
        message = err.splitlines()[-1] if err else f"exit status {done.returncode}"
        raise ExecutorError(f"{argv[0]}: {message.removeprefix(f'{argv[0]}: ')}")
    return done.returncode, done.stdout.decode(errors="replace")


async def submit(script: str, *, source: str, test_only: bool = False) -> str:
    """Submit ``script`` (sbatch reads it on stdin); returns the job id. An option
    sbatch refuses is an InputError naming the executor field it came from."""
    argv = ["sbatch", "--test-only" if test_only else "--parsable"]
    try:
        _, out = await _run(argv, source=source, stdin=script)
    except ExecutorError as exc:
        lowered = str(exc).lower()
        for word, field in _FIELD_OF_ERROR:
            if word in lowered:
                raise InputError(str(exc), source=source, field=field) from exc
        raise
    return out.strip().split(";")[0]


async def live_tasks(job_id: str, *, source: str) -> int:
    """How many array tasks of ``job_id`` are pending, running or completing."""
    _, out = await _run(["squeue", "-h", "-r", "-j", job_id, "-o", "%K"], source=source)
    return len(out.split())


async def accounting_on(*, source: str) -> bool:
    _, out = await _run(["scontrol", "show", "config"], source=source)
    match = re.search(r"^AccountingStorageType\s*=\s*(\S+)", out, re.MULTILINE)
    return match is not None and match[1] not in ("accounting_storage/none", "(null)")


async def task_states(job_id: str, *, accounting: bool, source: str) -> dict[int, TaskState]:
    """The state of each array task Slurm still knows, by array index."""
    if accounting:
        argv = ["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State,ExitCode"]
        _, out = await _run(argv, source=source)
        return parse_sacct(out)
    _, out = await _run(["scontrol", "show", "job", "-o", job_id], source=source)
    return parse_scontrol(out)


def parse_scontrol(text: str) -> dict[int, TaskState]:
    """``scontrol show job -o``: one record a line; pending tasks may share one
    (``ArrayTaskId=2-5%2``)."""
    states: dict[int, TaskState] = {}
    for line in text.splitlines():
        fields = dict(_RECORD_FIELD.findall(line))
        if "ArrayTaskId" not in fields or "JobState" not in fields:
            continue
        restarts = int(fields.get("Restarts") or 0)
        state = TaskState(fields["JobState"], restarts, fields.get("ExitCode", ""))
        for index in index_range(fields["ArrayTaskId"]):
            states[index] = state
    return states


def parse_sacct(text: str) -> dict[int, TaskState]:
    """``sacct -P -X -o JobID,State,ExitCode``: ``12_3|CANCELLED by 0|0:15``, pending
    tasks as ``12_[4-7%2]``."""
    states: dict[int, TaskState] = {}
    for line in text.splitlines():
        job, _, rest = line.partition("|")
        state, _, exit_code = rest.partition("|")
        _, underscore, indexes = job.partition("_")
        if not underscore:
            continue
        for index in index_range(indexes.strip("[]")):
            states[index] = TaskState(state.split()[0] if state else "", 0, exit_code)
    return states


def index_range(text: str) -> list[int]:
    """The indexes of ``3``, ``2-5``, ``1,4-6%2``."""
    found: list[int] = []
    for part in text.partition("%")[0].split(","):
        first, _, last = part.partition("-")
        if first.isdigit() and (not last or last.isdigit()):
            found.extend(range(int(first), int(last or first) + 1))
    return found


async def cancel(job_id: str, *, grace: float, source: str) -> None:
    """Cancel the pending array tasks (they never start), send the running ones' batch
    shell (``saturn batch``, exec'd) INT, so their supervisors stop the runs (TERM, then
    KILL after ``grace``) and record them (TERM would mean a requeue to them:
    ``--requeue-on-term``); what still runs ``STOP_MARGIN`` seconds after the grace is
    cancelled outright (Slurm: TERM to every process, KILL after KillWait). A job Slurm
    no longer knows is already gone."""
    await _run(["scancel", "--state=PENDING", job_id], source=source)
    await _run(["scancel", "--batch", "--signal=INT", job_id], source=source)
    with anyio.move_on_after(grace + STOP_MARGIN):
        while await live_tasks(job_id, source=source):  # noqa: ASYNC110 - Slurm ends them
            await anyio.sleep(_CANCEL_POLL)
        return
    await _run(["scancel", job_id], source=source)


async def partition_cpus(partition: str | None, *, source: str) -> int:
    """The CPUs of ``partition`` (default: every partition), counted once per node."""
    argv = ["sinfo", "-h", "-N", "-o", "%n %c"] + (["-p", partition] if partition else [])
    _, out = await _run(argv, source=source)
    nodes = dict(line.split()[:2] for line in out.splitlines() if len(line.split()) >= 2)
    return sum(int(cpus) for cpus in nodes.values() if cpus.isdigit())


async def node_hosts(partition: str | None, *, source: str) -> set[str]:
    """The host names of the nodes of ``partition`` (default: every partition)."""
    argv = ["sinfo", "-h", "-N", "-o", "%n"] + (["-p", partition] if partition else [])
    _, out = await _run(argv, source=source)
    return set(out.split())
