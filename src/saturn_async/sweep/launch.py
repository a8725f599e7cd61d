"""The use case of ``saturn run``: name and record a sweep, plan its batches, dispatch them.

:func:`prepare` reads the sweep file and builds the record and the executor (nothing
written, nothing started); inside ``async with launch.executor``, :func:`plan` checks
everything that can be checked, leaves out completed tasks, wires the results channel
and cuts the batches; :func:`dispatch` records the sweep and starts it, forgetting the
record again when the executor refuses. The CLI parses, prints and follows.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio
import anyio.to_thread

from saturn_async.exceptions import InputError, SaturnError
from saturn_async.executors.abc import Executor
from saturn_async.executors.jobs import DaskQueue, ResultsVia, WorkerJob
from saturn_async.executors.registry import DEFAULT, executor_class, open_executor
from saturn_async.spec.sweep import Sweep, check_sweep_name, load_sweep
from saturn_async.status import status_reader
from saturn_async.storage.layout import utcnow
from saturn_async.supervisor.process import start_ticks
from saturn_async.sweep import state
from saturn_async.sweep.follow import prepare_root
from saturn_async.sweep.plan import SweepPlan, plan_sweep
from saturn_async.sweep.results import ResultsBackend, results_backend


@dataclass(frozen=True, kw_only=True)
class LaunchOptions:
    """What ``saturn run`` was asked (its flags)."""

    sweep_file: str | None
    name: str | None = None
    prefix: str | None = None
    replace: bool = False
    resume: bool = False
    nprocs: int | None = None
    grace: float = 10.0
    log_chunk_minutes: float = 1.0
    skip_completed: bool = False
    detach: bool = False
    dry_run: bool = False
    max_input_size: int | None = None


@dataclass
class Launch:
    """A sweep being launched: read and named, then planned, then dispatched."""

    options: LaunchOptions
    sweep: Sweep
    results: ResultsBackend
    record: state.SweepRecord
    executor: Executor
    job: WorkerJob | None = None
    batches: SweepPlan | None = None
    """Every batch checked, none held: each is made again as it is sent (or written)."""
    dispatched: bool = False
    tasks_dispatched: int = 0

    def locations(self) -> Iterator[str]:
        """The output location of every task that runs now."""
        root = self.results.root
        return (f"{root}/{task.name}" for task in self.sweep.tasks)


def prepare(options: LaunchOptions) -> Launch:
    """Read the sweep file and build its record and executor; writes and starts nothing."""
    renamed = options.replace or options.prefix is not None
    sweep_file = _sweep_file(options.sweep_file, options.name, options.resume, renamed)
    sweep = load_sweep(sweep_file, options.max_input_size)
    source = os.path.abspath(sweep_file)
    name = _sweep_name(sweep, options.name, options.prefix)
    executor_section = sweep.executor or DEFAULT
    cls, config = executor_class(executor_section, source=source)
    if sweep.results is None:
        raise InputError("required field is missing", source=source, field="$.results")
    results = results_backend(sweep.results, source=source)
    pid = os.getpid()
    record = state.SweepRecord(
        name=name,
        created=utcnow(),
        source=source,
        executor=executor_section,
        results=sweep.results,
        results_root=results.root,
        tasks=[f"{results.root}/{task.name}" for task in sweep.tasks],
        batches=0,
        client_pid=pid,
        client_started=start_ticks(pid) or 0,
    )
    return Launch(options, sweep, results, record, cls(config, record))


async def plan(launch: Launch) -> bool:
    """Check what is left to check, then cut the batches; False when every task has
    succeeded before (``--skip-completed``, ``--resume``)."""
    options, record, executor = launch.options, launch.record, launch.executor
    executor.check()
    if options.detach and not executor.detaches:
        raise InputError(
            f"{type(executor).__name__} cannot detach; its batches end with this process",
            source="--detach",
        )
    # Every check of the input comes first: a typo is not hidden behind a name in use.
    if options.resume:
        await _check_resumable(state.load_record(record.name))
    elif not options.dry_run:
        state.check_name_free(record.name, replace=options.replace)
    if options.skip_completed or options.resume:
        lookup = await status_reader(launch.results.root)
        await anyio.to_thread.run_sync(_leave_out_succeeded, launch, lookup)
        if not launch.sweep.tasks:
            return False
    record.results_via = await _results_channel(launch)
    slots = options.nprocs or launch.sweep.nprocs or os.cpu_count() or 1
    groups = await executor.slot_groups(slots)
    launch.batches = plan_sweep(launch.sweep, launch.results.root, slots, groups, record.source)
    launch.job = WorkerJob(
        sweep=record.name,
        submitted=record.created,
        grace=options.grace,
        log_chunk_seconds=options.log_chunk_minutes * 60,
        stop=executor.stop_via(),
        results=record.results_via,
        slots=executor.slots_via(),
        client_cwd=os.getcwd() if executor.starts_in_client_cwd else None,
    )
    return True


def describe(launch: Launch) -> Iterator[str]:
    """What :func:`dispatch` would send (``--dry-run``), piece by piece."""
    assert launch.job is not None and launch.batches is not None, "plan first"
    return launch.executor.describe(launch.job, launch.batches)


async def dispatch(launch: Launch) -> None:
    """Record the sweep and start its batches. Not cancelled once begun: a stop signal
    that arrives meanwhile is handled when the batches run (``launch.dispatched``).
    When the executor refuses them, the record goes again and the name stays free.
    Once sent, the sweep's tasks and batches are let go (``tasks_dispatched`` counts
    them): a million of them need not stay while the sweep is followed."""
    batches = launch.batches
    assert launch.job is not None and batches is not None, "plan first"
    record = launch.record
    record.batches = len(batches)
    record.handle["grace"] = launch.options.grace
    await prepare_root(launch.results.root, launch.locations())
    with anyio.CancelScope(shield=True):
        options = launch.options
        state.create(record, batches, replace=options.replace or options.resume)
        try:
            await launch.executor.run(launch.job, batches)
        except SaturnError:
            state.discard(record.name)
            raise
        launch.dispatched = True
        state.save_record(record)
    launch.tasks_dispatched = len(launch.sweep.tasks)
    launch.sweep.tasks = []
    launch.batches = None


def _leave_out_succeeded(launch: Launch, lookup: Callable[[str], int | None]) -> None:
    """Drop the tasks whose status is success (in a thread: one read per task)."""
    root = launch.results.root
    launch.sweep.tasks = [t for t in launch.sweep.tasks if lookup(f"{root}/{t.name}") != 0]
    if not launch.options.resume:
        launch.record.tasks = list(launch.locations())


async def _check_resumable(old: state.SweepRecord) -> None:
    """Refuse to resume a sweep whose batches may still run (they would run its tasks
    twice)."""
    if start_ticks(old.client_pid) == old.client_started:
        raise InputError(
            f"sweep {old.name!r} is still followed by saturn run (pid {old.client_pid}); "
            f"let it end, or stop it with: saturn terminate --name {old.name}",
            source="--resume",
        )
    async with open_executor(old) as executor:
        if not executor.detaches:
            return  # its batches ended with its client
        left = (await executor.outstanding()).batches
        if left:
            raise InputError(
                f"sweep {old.name!r} has {left} batches queued or running; follow them "
                f"with saturn collect --name {old.name}, or stop them with saturn "
                f"terminate --name {old.name}",
                source="--resume",
            )
        await executor.forget()  # what the old batches left on the scheduler


async def _results_channel(launch: Launch) -> ResultsVia | None:
    """The channel of a Dask or Ray results backend (recorded for collect and terminate)."""
    results, record = launch.results, launch.record
    if results.queue is None:
        return None
    name = f"saturn-results-{record.name}-{record.created}"
    if results.queue == "dask" and results.scheduler_address is not None:
        return DaskQueue(name, results.scheduler_address)
    channel = await launch.executor.results_via(results.queue, name)
    if channel is not None:
        return channel
    if results.queue == "ray":
        raise InputError(
            "results class_spec Ray needs executor class_spec RayExecutor",
            source=record.source,
            field="$.results.class_spec",
        )
    address = os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address is None:
        raise InputError(
            "results class_spec Dask needs a Dask scheduler: give scheduler_address here, "
            "use DaskExecutor, or set DASK_SCHEDULER_ADDRESS",
            source=record.source,
            field="$.results.scheduler_address",
        )
    return DaskQueue(name, address)


def _sweep_file(sweep_file: str | None, name: str | None, resume: bool, renamed: bool) -> str:
    """RUN_YAML; with --resume it defaults to the file the sweep was started from."""
    if resume and renamed:
        raise InputError(
            "--resume keeps the sweep's name and record: not with --replace or --prefix",
            source="--resume",
        )
    if sweep_file is None:
        if not resume or name is None:
            raise InputError(
                "missing RUN_YAML (only --resume --name N can do without it)", source="RUN_YAML"
            )
        return state.load_record(check_sweep_name(name, source="--name", field="")).source
    return sweep_file


def _sweep_name(sweep: Sweep, name: str | None, prefix: str | None) -> str:
    if name is not None and prefix is not None:
        raise InputError("give --name or --prefix, not both", source="--prefix")
    if prefix is not None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        return check_sweep_name(f"{prefix}-{stamp}", source="--prefix", field="")
    if name is not None:
        return check_sweep_name(name, source="--name", field="")
    if sweep.name is None:
        raise InputError(
            "the sweep has no name: give name: in the file, --name or --prefix", source="--name"
        )
    return sweep.name
