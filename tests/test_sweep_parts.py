"""The pieces behind ``saturn run``: batch sizing, the queue collector, shared slots, ledger,
the shared stop wait."""

from __future__ import annotations

import itertools
import threading
from datetime import datetime

import anyio
import anyio.lowlevel
import pytest

from saturn_async.executors.shared_stop import shared_wait
from saturn_async.spec.models import Batch, Run
from saturn_async.spec.sweep import Sweep, Task
from saturn_async.storage.ledger import LedgerWriter, read_ledger
from saturn_async.storage.local import LocalStorage
from saturn_async.supervisor import Supervisor
from saturn_async.supervisor.shared_slots import SharedSlots
from saturn_async.sweep.collector import Collector
from saturn_async.sweep.plan import batch_sizes, plan_sweep
from sweeps import events_of


@pytest.mark.parametrize(
    ("tasks", "groups"), [(600, 8), (10, 4), (1, 3), (5000, 2), (5000, 8), (10**6, 8), (10**6, 64)]
)
def test_auto_batches_shrink_toward_the_end(tasks, groups):
    sizes = batch_sizes(tasks, "auto", groups)
    assert sum(sizes) == tasks
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[0] == -(-tasks // (2 * groups))
    # About 4 batches per group, however many tasks: each costs its engine a dispatch.
    assert len(sizes) <= min(tasks, 4 * groups)
    # The last is small next to a group's share (tasks / groups).
    assert sizes[-1] <= 3 * max(1, tasks / (4 * groups**2))


def test_auto_batches_fall_linearly():
    sizes = batch_sizes(5000, "auto", 8)
    steps = [a - b for a, b in itertools.pairwise(sizes[:-1])]
    assert len(sizes) == 30
    assert all(9 <= step <= 12 for step in steps), steps


def test_fixed_batches():
    assert batch_sizes(10, 4, 99) == [4, 4, 2]


def test_plan_writes_the_sweep_layout_under_the_results_root(tmp_path):
    sweep = Sweep(tasks=[Task(name=f"t{i}", command="true") for i in range(5)], batch_size=2,
                  retries=1)  # fmt: skip
    batches = list(plan_sweep(sweep, str(tmp_path), nprocs=4, groups=1, source="run.yaml"))
    assert [len(b.runs) for b in batches] == [2, 2, 1]
    assert [b.nprocs for b in batches] == [2, 2, 1]
    assert {b.layout for b in batches} == {"sweep"}
    assert batches[2].runs[0].remote_output_path == f"{tmp_path}/t4"
    assert batches[0].retries == 1


def test_collector_writes_objects_and_joins_log_chunks_when_status_arrives(tmp_path):
    collector = Collector(str(tmp_path))
    run = f"{tmp_path}/task"
    collector.apply({"op": "put", "location": f"{run}/log/000001", "data": b"second\n"})
    collector.apply({"op": "put", "location": f"{run}/log/000000", "data": b"first\n"})
    collector.apply(
        {"op": "part", "location": f"{run}/results/big", "offset": 0, "data": b"ab", "last": False}
    )
    assert not (tmp_path / "task/results/big").exists()  # not complete yet
    collector.apply(
        {"op": "part", "location": f"{run}/results/big", "offset": 2, "data": b"cd", "last": True}
    )
    collector.apply({"op": "put", "location": f"{run}/status", "data": b"success\n"})
    assert (tmp_path / "task/log").read_bytes() == b"first\nsecond\n"
    assert (tmp_path / "task/results/big").read_bytes() == b"abcd"
    assert not (tmp_path / "task/results/big.partial").exists()


def test_collector_deletes_a_lost_attempts_chunks_but_never_through_a_link(tmp_path):
    collector = Collector(str(tmp_path / "results"))
    run = tmp_path / "results" / "task"
    for chunk in ("000000", "000001"):
        collector.apply({"op": "put", "location": f"{run}/log/{chunk}", "data": b"lost\n"})
    collector.apply({"op": "delete_below", "location": f"{run}/log"})
    assert not (run / "log").exists()
    collector.apply({"op": "delete_below", "location": f"{run}/log"})  # nothing there: fine
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("mine")
    (run / "log").symlink_to(elsewhere)
    collector.apply({"op": "delete_below", "location": f"{run}/log"})
    assert (elsewhere / "keep").read_text() == "mine"


def test_collector_drops_locations_outside_its_directory(tmp_path):
    inside = tmp_path / "results"
    collector = Collector(str(inside))
    for location in (f"{tmp_path}/evil", f"{inside}/../evil", str(inside), "relative/x"):
        collector.apply({"op": "put", "location": location, "data": b"x"})
    assert collector.rejected == 4
    assert not (tmp_path / "evil").exists()


def test_ledger_forgets_an_outcome_when_a_run_is_dispatched_again(tmp_path):
    root = str(tmp_path)

    async def scenario() -> dict[str, int]:
        async with LocalStorage() as storage:
            first = LedgerWriter(storage)
            first.record(root, f"{root}/a", 1)
            first.record(root, f"{root}/b", 0)
            await first.flush()
            again = LedgerWriter(storage)
            again.record(root, f"{root}/a", None)
            await again.flush()
            return await read_ledger(storage, root)

    assert anyio.run(scenario) == {f"{root}/b": 0}


def test_shared_slots_bound_runs_across_supervisors_in_threads(tmp_path):
    slots = SharedSlots(2)

    def supervise(name: str) -> None:
        runs = [Run(cmd="sleep 0.2", remote_output_path=f"{tmp_path}/{name}/{i}") for i in range(4)]
        batch = Batch(nprocs=2, remote_output_path=f"{tmp_path}/{name}", runs=runs)

        async def main() -> None:
            await Supervisor(2, shared_slots=slots, report=lambda _: None).run([batch])

        anyio.run(main)

    threads = [threading.Thread(target=supervise, args=(n,)) for n in ("x", "y")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    spans = []
    for run_dir in sorted(tmp_path.glob("*/*")):
        events = {e["type"]: datetime.fromisoformat(e["utctimestamp"]) for e in events_of(run_dir)}
        spans.append((events["started"], events["complete"]))
    assert len(spans) == 8
    most = max(sum(1 for s, e in spans if s <= moment < e) for moment, _ in spans)
    assert most == 2


def test_shared_stop_wait_is_taken_over_when_the_waiting_batch_ends():
    polls: list[str] = []
    released: list[str] = []
    stopped = anyio.Event()
    send, receive = anyio.create_memory_object_stream[str](10)

    def waiter(name: str):
        async def wait() -> None:  # what a stop signal's wait does: poll until set
            polls.append(name)
            await send.send(name)
            await stopped.wait()

        return wait

    async def batch(name: str, scope: anyio.CancelScope) -> None:
        with scope:
            await shared_wait(b"sweep", waiter(name))
            released.append(name)

    async def main() -> None:
        first = anyio.CancelScope()
        with anyio.fail_after(30), send, receive:
            async with anyio.create_task_group() as tg:
                tg.start_soon(batch, "first", first)
                assert await receive.receive() == "first"
                tg.start_soon(batch, "second", anyio.CancelScope())
                tg.start_soon(batch, "third", anyio.CancelScope())
                await anyio.lowlevel.checkpoint()  # both wait on the first one now
                first.cancel()  # the batch that waits ends: one of the others takes over
                assert await receive.receive() in ("second", "third")
                stopped.set()

    anyio.run(main)
    assert len(polls) == 2, polls
    assert sorted(released) == ["second", "third"]


def test_following_a_sweep_shows_its_running_tasks(tmp_path):
    from rich.console import Console

    from saturn_async.cli.progress import render
    from saturn_async.storage.local import read_status_code
    from saturn_async.supervisor.progress import SweepProgress
    from saturn_async.sweep import follow

    done, running, waiting = (f"{tmp_path}/{name}" for name in ("done", "busy", "waiting"))
    for location in (done, running):
        (tmp_path / location).mkdir()
        (tmp_path / location / "log").write_text("")
    (tmp_path / "done" / "status").write_text("success\n")
    progress = SweepProgress(total=3, running_label="task")
    tasks = follow.PendingTasks([done, running, waiting], progress, {}, None)
    tasks.settle_from(read_status_code)
    tasks.note_running()
    assert list(tasks.pending) == [running, waiting]
    assert (progress.succeeded, list(progress.running)) == (1, [running])
    console = Console(width=120, record=True)
    console.print(render(progress))
    text = console.export_text()
    assert "task" in text and "busy" in text and "1 running" in text and "1 pending of 3" in text


@pytest.mark.parametrize(
    "parts",
    [
        {"stop": "TerminateFile"},
        {"stop": "DaskEvent", "results": "DaskQueue", "slots": "DaskResource"},
        {"stop": "RayActor", "results": "RayActor"},
    ],
)
def test_worker_jobs_carry_their_backend_parts_typed(parts):
    import msgspec

    from saturn_async.executors import jobs

    made = {
        "TerminateFile": lambda: jobs.TerminateFile("/state/terminate"),
        "DaskEvent": lambda: jobs.DaskEvent("saturn-terminate-s"),
        "DaskQueue": lambda: jobs.DaskQueue("saturn-results-s", "tcp://10.0.0.1:8786"),
        "DaskResource": lambda: jobs.DaskResource("slots"),
        "RayActor": lambda: jobs.RayActor("saturn-s"),
    }
    job = jobs.WorkerJob(sweep="s", **{field: made[kind]() for field, kind in parts.items()})
    wire = msgspec.json.encode(job)
    assert msgspec.json.decode(wire, type=jobs.WorkerJob) == job
    for field, kind in parts.items():
        assert type(getattr(msgspec.json.decode(wire, type=jobs.WorkerJob), field)).__name__ == kind
    # A variant a worker does not know is refused with its field, not taken as another.
    with pytest.raises(msgspec.ValidationError, match=r"\$\.stop"):
        msgspec.json.decode(b'{"sweep": "s", "stop": {"type": "slurm-x"}}', type=jobs.WorkerJob)
