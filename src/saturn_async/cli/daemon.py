"""``saturn daemon``: run the supervisor as a long-running service on this machine."""

from __future__ import annotations

import anyio
import click

from saturn_async.cli.memory_options import memory_options
from saturn_async.cli.options import SLOTS, FiniteRange, daemon_options
from saturn_async.cli.start_options import start_options
from saturn_async.daemon.config import DaemonConfig, load_config
from saturn_async.daemon.paths import DaemonPaths, daemon_paths
from saturn_async.daemon.service import Daemon
from saturn_async.supervisor.memory_caps import MemoryCaps


@click.command()
@click.option("--nprocs", type=SLOTS, help="Slots [default: number of CPUs].")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="YAML file of settings (the long options' names, with _); re-read on SIGHUP. "
    "Flags given here override it.",
)
@daemon_options
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False),
    help="Journal and lock [default: $SATURN_DAEMON_STATE_DIR, else "
    "$XDG_STATE_HOME/saturn_async/daemon-NAME].",
)
@click.option(
    "--spool",
    type=click.Path(file_okay=False),
    help="Also take batch files dropped into this directory (write them under a name "
    "starting with '.' or ending in .tmp, then rename).",
)
@click.option("--grace", type=FiniteRange(min=0), help="SIGTERM to SIGKILL, per run [10].")
@click.option(
    "--shutdown-grace",
    type=FiniteRange(min=0),
    help="On SIGTERM: seconds running runs may finish before they are stopped [60].",
)
@click.option(
    "--log-chunk-minutes",
    type=FiniteRange(min=0, min_open=True),
    help="For s3:// outputs: ship logs as a chunk this often [1].",
)
@click.option("--staging-dir", type=click.Path(file_okay=False), help="As for saturn batch.")
@click.option(
    "--min-free-mb",
    type=FiniteRange(min=0),
    help="Start no run while the state, staging or an output directory has less free [64].",
)
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), help="The daemon's own log on stderr."
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    help="Control connections open at once; more get an error and are closed [64].",
)
@click.option(
    "--idle-timeout",
    type=FiniteRange(min=0, min_open=True),
    help="Close a control connection that sends (or reads) nothing this long [30].",
)
@click.option(
    "--max-frame-mb",
    type=FiniteRange(min=0, min_open=True),
    help="The largest request accepted on the control socket, in MB [256].",
)
@memory_options
@start_options
def daemon(
    nprocs: int | None,
    config_path: str | None,
    name: str,
    socket: str | None,
    state_dir: str | None,
    spool: str | None,
    grace: float | None,
    shutdown_grace: float | None,
    log_chunk_minutes: float | None,
    staging_dir: str | None,
    min_free_mb: float | None,
    log_format: str | None,
    max_connections: int | None,
    idle_timeout: float | None,
    max_frame_mb: float | None,
    memory: str | None,
    memory_cap: str | None,
    gpus: str | None,
    memfree: str | None,
    load: float | None,
) -> None:
    """Run submitted batches on this machine's slots until drained or stopped.

    Runs in the foreground (systemd runs it like this; Type=notify works). Batches
    arrive with `saturn submit` or through --spool; every batch shares the slots.
    SIGTERM drains: running runs get --shutdown-grace to finish, then are stopped;
    queued runs stay in the journal for the next start. SIGHUP reloads --config.
    After a crash, starting it again with the same state directory stops what the
    last one left running and runs again what it lost. See docs/operations.md.
    """
    overrides: dict[str, object] = {
        "nprocs": nprocs,
        "spool": spool,
        "grace": grace,
        "shutdown_grace": shutdown_grace,
        "log_chunk_minutes": log_chunk_minutes,
        "staging_dir": staging_dir,
        "min_free_mb": min_free_mb,
        "log_format": log_format,
        "max_connections": max_connections,
        "idle_timeout": idle_timeout,
        "max_frame_mb": max_frame_mb,
        "memory": memory,
        "memory_cap": memory_cap,
        "gpus": gpus,
        "memfree": memfree,
        "load": load,
    }
    config = load_config(config_path, overrides)
    if config.memory is not None:
        MemoryCaps(mode=config.memory_cap).require()
    paths = daemon_paths(name, state_dir, socket)
    try:
        anyio.run(_serve, paths, config, config_path, overrides)
    except KeyboardInterrupt:  # before its signal handling starts (during recovery)
        raise SystemExit(130) from None


async def _serve(
    paths: DaemonPaths,
    config: DaemonConfig,
    config_path: str | None,
    overrides: dict[str, object],
) -> None:
    await Daemon(paths, config, config_path=config_path, overrides=overrides).serve()
