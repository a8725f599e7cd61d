"""``saturn run RUN_YAML``: dispatch a sweep through its executor, then follow it."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime

import anyio
import click

from saturn_async.cli.following import follow_sweep, interrupted
from saturn_async.cli.options import (
    SLOTS,
    grace_option,
    joblog_option,
    log_chunk_minutes_option,
    max_input_size_option,
)
from saturn_async.cli.stop_signals import raise_on_stop_signals, signal_of
from saturn_async.exceptions import InputError, SaturnError
from saturn_async.executors import DEFAULT, Executor, WorkerJob, executor_class, open_executor
from saturn_async.joblog import open_task_logger
from saturn_async.spec.models import Batch
from saturn_async.spec.sweep import Sweep, check_sweep_name, load_sweep
from saturn_async.status import status_reader
from saturn_async.storage.layout import utcnow
from saturn_async.supervisor.process import start_ticks
from saturn_async.sweep import state
from saturn_async.sweep.follow import prepare_root
from saturn_async.sweep.plan import plan_batches, plan_sweep
from saturn_async.sweep.results import ResultsBackend, results_backend


@click.command()
@click.argument("sweep_file", metavar="[RUN_YAML]", type=click.Path(dir_okay=False), required=False)
@click.option("--name", help="The sweep's name (default: the file's name: field).")
@click.option("--prefix", help="Name the sweep PREFIX-<UTC timestamp>.")
@click.option("--replace", is_flag=True, help="Reuse a name in use, forgetting the old sweep.")
@click.option(
    "--resume",
    is_flag=True,
    help="Run the recorded sweep of this name again: only its tasks without status success "
    "(unfinished and failed), keeping every task in its record. RUN_YAML defaults to the "
    "file it was started from.",
)
@click.option(
    "--nprocs",
    type=SLOTS,
    help="Slots per batch [default: the file's nprocs, else the CPU count].",
)
@grace_option
@log_chunk_minutes_option("For S3 and Dask results: ship each log as a new chunk this often.")
@click.option("--skip-completed", is_flag=True, help="Leave out tasks whose status is success.")
@click.option(
    "--detach", is_flag=True, help="Dispatch, then exit (Dask, Ray with an address, Kubernetes)."
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print what would be dispatched and exit: the batch files as JSON lines, or "
    "KubernetesExecutor's manifests (for kubectl apply -f -). Records and starts nothing.",
)
@joblog_option
@max_input_size_option
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
def run(
    sweep_file: str | None,
    name: str | None,
    prefix: str | None,
    replace: bool,
    resume: bool,
    nprocs: int | None,
    grace: float,
    log_chunk_minutes: float,
    skip_completed: bool,
    detach: bool,
    dry_run: bool,
    joblog: str | None,
    max_input_size: int | None,
    quiet: bool,
) -> None:
    """Run a sweep (Saturn Run's run.yaml): dispatch its tasks in batches, then follow them.

    Each task writes log, events, results/, error (on failure) and, last, status
    (success or failure) to <results>/<task name>. Ctrl-C detaches from executors whose
    batches outlive this process (Dask with a scheduler, Ray with an address,
    Kubernetes); with the others it stops the runs. SIGTERM, SIGHUP (a closed terminal)
    and SIGQUIT do as Ctrl-C does. Exit code: 0 all succeeded, 1 some failed, 2 bad
    input, 128+N when interrupted by signal N (130 INT, 143 TERM, 129 HUP, 131 QUIT).
    See docs/executors.md.
    """
    if joblog is not None and detach:
        raise InputError(
            "is written while saturn run follows the sweep; after --detach, use "
            "`saturn status --name NAME --joblog FILE`",
            source="--joblog",
        )
    sweep_file = _sweep_file(sweep_file, name, resume=resume, renamed=replace or prefix is not None)
    sweep = load_sweep(sweep_file, max_input_size)
    source = os.path.abspath(sweep_file)
    sweep_name = _sweep_name(sweep, name, prefix)
    executor_section = sweep.executor or DEFAULT
    cls, config = executor_class(executor_section, source=source)
    if sweep.results is None:
        raise InputError("required field is missing", source=source, field="$.results")
    results = results_backend(sweep.results, source=source)
    pid = os.getpid()
    record = state.SweepRecord(
        name=sweep_name,
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
    slots = nprocs or sweep.nprocs or os.cpu_count() or 1
    with cls(config, record) as executor:
        executor.check()
        if detach and not executor.detaches:
            raise InputError(
                f"{cls.__name__} cannot detach; its batches end with this process",
                source="--detach",
            )
        # Every check of the input comes first: a typo is not hidden behind a name in use.
        if resume:
            _check_resumable(state.load_record(sweep_name))
        elif not dry_run:
            state.check_name_free(sweep_name, replace=replace)
        if skip_completed or resume:
            lookup = status_reader(results.root)
            sweep.tasks = [t for t in sweep.tasks if lookup(f"{results.root}/{t.name}") != 0]
            if not resume:
                record.tasks = [f"{results.root}/{task.name}" for task in sweep.tasks]
            if not sweep.tasks:
                print("every task has succeeded before; nothing to run")
                return
        job = WorkerJob(
            sweep=sweep_name,
            submitted=record.created,
            grace=grace,
            log_chunk_seconds=log_chunk_minutes * 60,
            client_cwd=os.getcwd() if executor.starts_in_client_cwd else None,
            **_results_queue(results, executor, record),
            **executor.worker_job(),
        )
        if dry_run:  # every batch checked first, then each made as it is written
            plan = plan_sweep(sweep, results.root, slots, executor.slot_groups(slots), source)
            sys.stdout.writelines(executor.describe(job, plan))
            return
        batches = plan_batches(sweep, results.root, slots, executor.slot_groups(slots), source)
        record.batches = len(batches)
        record.handle["grace"] = grace
        task_logger = open_task_logger(joblog, results.root, record.tasks)
        anyio.run(prepare_root, results.root, [f"{results.root}/{t.name}" for t in sweep.tasks])
        state.create(record, batches, replace=replace or resume)
        _dispatch(executor, job, batches, record)
        if not quiet:
            again = f"{len(sweep.tasks)} of " if resume else ""
            print(
                f"sweep {sweep_name}: {again}{len(record.tasks)} tasks in {len(batches)} "
                f"batches via {cls.__name__}",
                file=sys.stderr,
            )
        if detach:
            print(f"detached; follow with: saturn collect --name {sweep_name}")
            return
        code = follow_sweep(record, executor, quiet, task_logger)
        if code in (0, 1):
            executor.forget()
    sys.exit(code)


def _dispatch(
    executor: Executor, job: WorkerJob, batches: list[Batch], record: state.SweepRecord
) -> None:
    """Start the batches; from here on no stop signal may end this process with runs
    left behind."""
    raise_on_stop_signals()
    try:
        executor.dispatch(job, batches)
        state.save_record(record)
    except KeyboardInterrupt as exc:
        sys.exit(interrupted(record, executor, signal_of(exc)))
    except SaturnError:
        state.discard(record.name)  # nothing was dispatched: the name stays free
        raise


def _check_resumable(old: state.SweepRecord) -> None:
    """Refuse to resume a sweep whose batches may still run (they would run its tasks
    twice)."""
    if start_ticks(old.client_pid) == old.client_started:
        raise InputError(
            f"sweep {old.name!r} is still followed by saturn run (pid {old.client_pid}); "
            f"let it end, or stop it with: saturn terminate --name {old.name}",
            source="--resume",
        )
    with open_executor(old) as executor:
        if not executor.detaches:
            return  # its batches ended with its client
        left = executor.outstanding().batches
        if left:
            raise InputError(
                f"sweep {old.name!r} has {left} batches queued or running; follow them "
                f"with saturn collect --name {old.name}, or stop them with saturn "
                f"terminate --name {old.name}",
                source="--resume",
            )
        executor.forget()  # what the old batches left on the scheduler


def _results_queue(
    results: ResultsBackend, executor: Executor, record: state.SweepRecord
) -> dict[str, str]:
    """The WorkerJob fields naming the queue of a Dask or Ray results backend; recorded
    for collect and terminate."""
    if results.queue is None:
        return {}
    if results.queue == "ray":
        fields = executor.results_channel()
        if fields is None:
            raise InputError(
                "results class_spec Ray needs executor class_spec RayExecutor",
                source=record.source,
                field="$.results.class_spec",
            )
        record.handle.update(fields)
        return fields
    address = (
        results.scheduler_address
        or executor.scheduler_address()
        or os.environ.get("DASK_SCHEDULER_ADDRESS")
    )
    if address is None:
        raise InputError(
            "results class_spec Dask needs a Dask scheduler: give scheduler_address here, "
            "use DaskExecutor, or set DASK_SCHEDULER_ADDRESS",
            source=record.source,
            field="$.results.scheduler_address",
        )
    record.handle["results_queue"] = f"saturn-results-{record.name}-{record.created}"
    record.handle["results_scheduler"] = address
    return {
        "results_queue": record.handle["results_queue"],
        "results_scheduler": address,
    }


def _sweep_file(sweep_file: str | None, name: str | None, *, resume: bool, renamed: bool) -> str:
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
