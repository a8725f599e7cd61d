"""``split``: cut a job into batch files and point a recipe's command at them."""

from __future__ import annotations

import os
import re
import shlex
import tarfile
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.from_thread
import msgspec
import yaml

from saturn_async.exceptions import InputError
from saturn_async.executors.slurm.script import split_script
from saturn_async.spec import Batch, Run, load_batch_file
from saturn_async.spec.decode import load_yaml_mapping
from saturn_async.spec.paths import is_remote
from saturn_async.split_outdir import plan_outdir
from saturn_async.split_ship import check_destination, download_lines, upload
from saturn_async.status import status_reader
from saturn_async.storage.layout import RESULTS
from saturn_async.storage.local import write_atomically

SYNC_BEGIN = "# >>> saturn split --sync: managed block, replaced by every split >>>"
SYNC_END = "# <<< saturn split --sync <<<"
RECIPE = "recipe.yaml"
SLURM_SCRIPT = "slurm.sh"
BATCH_MODE = 0o600
"""Batch files hold the runs' ``env`` (tokens, often): readable by their owner only."""
_SYNC_BLOCK = re.compile(re.escape(SYNC_BEGIN) + r".*?" + re.escape(SYNC_END) + r"\n?", re.DOTALL)


@dataclass(frozen=True)
class Sync:
    """``--sync SRC[:DEST]``: a local tree packed next to the batches, unpacked at DEST."""

    source: Path
    dest: str

    @classmethod
    def parse(cls, value: str) -> Sync:
        src, _, dest = value.partition(":")
        source = Path(src).expanduser().absolute()
        if not source.exists():
            raise InputError(f"{src!r} does not exist", source="--sync")
        return cls(source, dest or str(source))

    @property
    def tarball(self) -> str:
        return f"sync-{self.source.name or 'root'}.tar.gz"


@dataclass
class SplitReport:
    """What ``split`` did, by category."""

    counts: Counter[str] = field(default_factory=Counter)
    batch_files: int = 0
    batch_size: int = 0
    nprocs: int = 0
    outdir: str = ""
    shipped_to: str | None = None
    """The ``s3://`` URL the batch files and tarballs were uploaded to, if any."""


def split_job(
    recipe_path: str,
    job_path: str,
    outdir: str,
    *,
    batch_size: int | None = None,
    nprocs: int | None = None,
    remote_output_path: str | None = None,
    max_jobs: int | None = None,
    skip_completed: bool = False,
    skip_failures: bool = False,
    syncs: tuple[str, ...] = (),
    remote_commands_directory: str | None = None,
    max_input_size: int | None = None,
    overwrite: bool = False,
    indent: int | None = None,
    job_data: bytes | None = None,
    slurm: bool = False,
) -> SplitReport:
    """Validate everything, then write ``OUTDIR/{0..K}.json`` and ``OUTDIR/recipe.yaml``.

    ``indent``: batch files pretty-printed with that many spaces (default: one line).
    ``job_data``: the job file's content when it is an ``s3://`` URL (read by the caller).
    Existing files in OUTDIR are replaced only if an earlier split wrote them (or with
    ``overwrite``); see :mod:`saturn_async.split_outdir`. Call it in a worker thread of
    an event loop: S3 transfers (``--remote-commands-directory``) run back in that loop.
    With ``slurm``, an sbatch script ``OUTDIR/slurm.sh`` (a job array) takes the
    recipe's place.
    """
    if slurm:
        _check_slurm_split(recipe_path, syncs, remote_commands_directory)
    recipe = {} if slurm else load_yaml_mapping(recipe_path, max_input_size)
    spec = recipe.setdefault("spec", {})
    if not isinstance(spec, dict):
        raise InputError("expected a mapping", source=recipe_path, field="$.spec")
    start_script = spec.get("start_script") or ""
    if not isinstance(start_script, str):
        raise InputError("expected a string", source=recipe_path, field="$.spec.start_script")
    sync_specs = [Sync.parse(value) for value in syncs]
    if len({s.tarball for s in sync_specs}) != len(sync_specs):
        raise InputError("two sources share a directory name", source="--sync")
    job = load_batch_file(
        job_path,
        nprocs=nprocs,
        remote_output_path=_utf8(remote_output_path, "--remote-output-path"),
        max_input_size=max_input_size,
        output_flag="--remote-output-path",
        data=job_data,
    )
    assert job.nprocs is not None
    report = SplitReport(nprocs=job.nprocs, batch_size=batch_size or 3 * job.nprocs)
    runs = _select(job, report.counts, skip_completed, skip_failures, max_jobs)
    report.batch_files = -(-len(runs) // report.batch_size)

    out = Path(outdir).absolute()
    report.outdir = str(out)
    remote_dir = (remote_commands_directory or str(out)).rstrip("/") or "/"
    # Shipped through S3: the machines fetch the files into OUTDIR's absolute path.
    download: list[str] = []
    if is_remote(remote_dir):
        report.shipped_to, remote_dir = remote_dir, str(out)
        download = download_lines(report.shipped_to, remote_dir)
    spec["command"] = [
        f"sc batch {shlex.quote(f'{remote_dir}/{i}.json')}" for i in range(report.batch_files)
    ]
    spec["start_script"] = _with_sync_block(start_script, download, sync_specs, remote_dir)
    shipped = [f"{i}.json" for i in range(report.batch_files)]
    shipped += [sync.tarball for sync in sync_specs]
    written = SLURM_SCRIPT if slurm else RECIPE
    if slurm and not report.batch_files:
        raise InputError("no run is left to include: no job array to write", source=job_path)
    plan = plan_outdir(out, {written, *shipped}, job_path, report.batch_files, overwrite)
    if report.shipped_to is not None:
        flag = "--remote-commands-directory"
        report.shipped_to = anyio.from_thread.run(check_destination, report.shipped_to, flag)
    try:
        plan.claim()
        _write_batches(job, runs, out, report.batch_size, indent)
        for sync in sync_specs:
            _pack(sync, out / sync.tarball)
        if slurm:
            script = split_script(remote_dir, report.batch_files, job.nprocs)
            write_atomically(str(out / SLURM_SCRIPT), script.encode(), 0o755)
        else:
            write_atomically(str(out / RECIPE), _dump_recipe(recipe))
        plan.finish()
    except OSError as exc:
        raise InputError(f"cannot write: {exc}", source=str(out)) from exc
    if report.shipped_to is not None:
        anyio.from_thread.run(upload, out, shipped, report.shipped_to)
    return report


def _utf8(value: str | None, flag: str) -> str | None:
    """``value``, or InputError when it (from the command line: bytes that are not UTF-8
    kept as surrogates) cannot go into a batch file, which is JSON."""
    try:
        value is None or value.encode()
    except UnicodeEncodeError:
        raise InputError(
            f"{value!r} is not UTF-8, which the batch files (JSON) must be", source=flag
        ) from None
    return value


def _check_slurm_split(
    recipe_path: str, syncs: tuple[str, ...], remote_commands_directory: str | None
) -> None:
    """A Slurm script has no recipe, and its array tasks do not download or unpack."""
    if recipe_path != "-":
        raise InputError(
            "give - for RECIPE with --format slurm (there is no recipe)", source=recipe_path
        )
    if syncs:
        raise InputError(
            "not with --format slurm: the nodes read a shared filesystem", source="--sync"
        )
    if remote_commands_directory is not None and is_remote(remote_commands_directory):
        raise InputError(
            "not an s3:// URL with --format slurm: a directory every node shares",
            source="--remote-commands-directory",
        )


def _select(
    job: Batch,
    counts: Counter[str],
    skip_completed: bool,
    skip_failures: bool,
    max_jobs: int | None,
) -> list[Run]:
    """The runs to include, counting each run's category in ``counts``."""
    runs = job.runs
    if not (skip_completed or skip_failures):
        selected = runs
        counts["included"] += len(runs)
    else:
        selected = []
        assert job.remote_output_path is not None
        recorded = anyio.from_thread.run(status_reader, job.remote_output_path)
        for run in runs:
            assert run.remote_output_path is not None
            code = recorded(run.remote_output_path)
            if code is None:
                counts["included: not run yet"] += 1
            elif code == 0 and skip_completed:
                counts["skipped: succeeded before"] += 1
                continue
            elif code != 0 and skip_failures:
                counts["skipped: failed before"] += 1
                continue
            else:
                counts[f"included: {'succeeded' if code == 0 else 'failed'} before"] += 1
            selected.append(run)
    if max_jobs is not None and len(selected) > max_jobs:
        counts["left out by --max-jobs"] = len(selected) - max_jobs
        selected = selected[:max_jobs]
    return selected


def _write_batches(job: Batch, runs: list[Run], out: Path, size: int, indent: int | None) -> None:
    """Write each batch file as it is cut: its runs without an earlier status, each with
    its ``local_results_dir`` (results of a local run go straight into place; a remote
    run's are staged in /tmp)."""
    assert job.remote_output_path is not None
    remote = is_remote(job.remote_output_path)  # its runs lie inside it: remote too
    encoder = msgspec.json.Encoder()
    for index, start in enumerate(range(0, len(runs), size)):
        chunk = runs[start : start + size]
        for run in chunk:
            run.status_code = run.status = None
            if run.local_results_dir is None:
                run.local_results_dir = (
                    f"{tempfile.gettempdir()}/{uuid.uuid4().hex}/"
                    if remote
                    else f"{run.remote_output_path}/{RESULTS}"
                )
        data = encoder.encode(msgspec.structs.replace(job, runs=chunk))
        if indent is not None:
            data = msgspec.json.format(data, indent=indent) + b"\n"
        write_atomically(str(out / f"{index}.json"), data, BATCH_MODE)


def _pack(sync: Sync, tarball: Path) -> None:
    """Pack into a new temporary file (never one that exists, never through a link),
    then rename it over ``tarball``."""
    tmp = tarball.with_name(f"{tarball.name}.tmp-{uuid.uuid4().hex}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        with (
            os.fdopen(os.open(tmp, flags, 0o644), "wb") as file,
            tarfile.open(fileobj=file, mode="w:gz") as tar,
        ):
            arcname = "." if sync.source.is_dir() else sync.source.name
            tar.add(sync.source, arcname=arcname)
        os.replace(tmp, tarball)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _with_sync_block(
    start_script: str, download: list[str], syncs: list[Sync], remote_dir: str
) -> str:
    """``start_script`` with the managed block (the ``download`` lines, then unpacking
    each ``--sync`` tarball) in place of an earlier one, first."""
    script = _SYNC_BLOCK.sub("", start_script)
    if not (download or syncs):
        return script
    lines = [SYNC_BEGIN, *download]
    for sync in syncs:
        dest = shlex.quote(sync.dest)
        lines.append(
            f"mkdir -p {dest} && tar -xzf {shlex.quote(f'{remote_dir}/{sync.tarball}')} -C {dest}"
        )
    lines.append(SYNC_END)
    return "\n".join(lines) + "\n" + script


class _RecipeDumper(yaml.SafeDumper):
    """Writes a string of several lines (a ``start_script: |`` block) in block style."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_RecipeDumper.add_representer(str, _represent_str)


def _dump_recipe(recipe: dict[str, Any]) -> bytes:
    text: str = yaml.dump(
        recipe, Dumper=_RecipeDumper, sort_keys=False, default_flow_style=False, width=10**6
    )
    return text.encode()
