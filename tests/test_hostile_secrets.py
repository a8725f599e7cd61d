"""Secrets: the sweep state store is private, Kubernetes carries env in Secrets, and AWS
credentials are written nowhere."""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from hostile import changes_outside, snapshot
from sweeps import write_sweep
from test_s3_outputs import objects

TOKEN = "tok-3f9a1c77e2"
TASKS = [{"name": "t", "command": "echo hi", "env": {"API_TOKEN": TOKEN}}]


def modes(root: Path) -> dict[str, tuple[str, int]]:
    """Every entry below ``root`` (and root itself): its kind and mode bits."""
    found = {".": ("dir", stat.S_IMODE(root.stat().st_mode))}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory, name)
            kind = "dir" if name in dirs else "file"
            found[str(path.relative_to(root))] = (kind, stat.S_IMODE(path.lstat().st_mode))
    return found


def loose_store(store: Path) -> None:
    """An older store of ours: 0755 directories, an older sweep's 0644 files."""
    old = store / "sweeps" / "old" / "batches"
    old.mkdir(parents=True)
    for path in (store, store / "sweeps", old.parent, old):
        path.chmod(0o755)
    (old.parent / "sweep.json").write_text("{}")
    (old.parent / "sweep.json").chmod(0o644)


@dataclass
class StoreCase:
    name: str
    setup: Callable[[Path], None]


STORE_CASES = [
    StoreCase("no store yet", lambda store: None),
    StoreCase("an older store with 0755 directories", loose_store),
]


@pytest.mark.parametrize("case", STORE_CASES, ids=[c.name for c in STORE_CASES])
def test_state_store_is_0700_and_0600(case: StoreCase, tmp_path: Path, saturn) -> None:
    store = tmp_path / "state" / "saturn_async"
    case.setup(store)
    path = write_sweep(tmp_path, TASKS)
    done = saturn("run", str(path), "-q")
    assert done.returncode == 0, done.stderr
    found = modes(store)
    assert any(TOKEN in p.read_text() for p in (store / "sweeps" / "lr-sweep").rglob("*.json"))
    # An older sweep's entries keep their modes: the 0700 directories above close them.
    for name, (kind, mode) in found.items():
        if not name.startswith("sweeps/old"):
            assert mode == (0o700 if kind == "dir" else 0o600), (name, oct(mode))


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_a_store_owned_by_another_user_is_refused(tmp_path: Path, saturn) -> None:
    store = tmp_path / "state" / "saturn_async"
    store.mkdir(parents=True)
    os.chown(store, 65534, 65534)
    path = write_sweep(tmp_path, TASKS)
    before = snapshot(tmp_path)
    done = saturn("run", str(path), "-q")
    assert done.returncode == 2
    assert done.stderr == (
        f"saturn: error: {store}: the sweep state store is owned by uid 65534, not by this "
        "user (it holds the runs' env); remove it or set XDG_DATA_HOME\n"
    )
    assert changes_outside(before, snapshot(tmp_path), []) == []


KUBE = {"class_spec": "KubernetesExecutor", "image": "ghcr.io/example/saturn:1"}
KUBE_ENV = {"DB_PASSWORD": "pw-8d1e0b44"}


@pytest.mark.parametrize("via", ["auto", "s3"])
def test_kubernetes_env_goes_in_secrets_only(tmp_path: Path, saturn, via: str) -> None:
    path = write_sweep(
        tmp_path,
        TASKS,
        executor={**KUBE, "env": KUBE_ENV, "batches_via": via},
        results={"class_spec": "S3", "url": "s3://bucket/sweeps"},
    )
    done = saturn("run", str(path), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stdout and KUBE_ENV["DB_PASSWORD"] not in done.stdout
    *owned, job = yaml.safe_load_all(done.stdout)
    name = job["metadata"]["name"]
    assert [o["kind"] for o in owned] == ["Secret"] * len(owned)
    data = {
        o["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in o["data"].items()}
        for o in owned
    }
    assert data[f"{name}-env"] == KUBE_ENV
    if via == "auto":
        assert TOKEN in data[f"{name}-batches"]["0.json"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert "env" not in container
    assert container["envFrom"] == [{"secretRef": {"name": f"{name}-env"}}]


ACCESS_KEY = "AKIAHOSTILE7Q2XW9PLM"
SECRET_KEY = "hostile/Secret+Key9f3b2c1d0e5a7b6c8d4e"


def test_aws_credentials_are_written_nowhere(
    tmp_path: Path, saturn, s3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SECRET_KEY[::-1])
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    writes = "echo r > $SATURN_RUN_LOCAL_RESULTS_DIR/r.txt; echo out; exit {code}"
    job = tmp_path / "job.json"
    job.write_text(
        json.dumps(
            {
                "nprocs": 2,
                "remote_output_path": f"{s3}/batch",
                "runs": [{"cmd": writes.format(code=c)} for c in (0, 3)],
            }
        )
    )
    printed = []
    done = saturn("batch", str(job), "-q")
    assert done.returncode == 1, done.stderr
    printed.append(done.stdout + done.stderr)
    tasks = [{"name": f"t{c}", "command": writes.format(code=c)} for c in (0, 3)]
    sweep = write_sweep(tmp_path, tasks, results={"class_spec": "S3", "url": f"{s3}/sweep"})
    done = saturn("run", str(sweep), "-q")
    assert done.returncode == 1, done.stderr
    printed.append(done.stdout + done.stderr)
    kube = write_sweep(
        tmp_path, tasks, executor=KUBE, results={"class_spec": "S3", "url": f"{s3}/k"}
    )
    done = saturn("run", str(kube), "--dry-run")
    assert done.returncode == 0, done.stderr
    printed.append(done.stdout + done.stderr)

    stored = {**objects(f"{s3}/batch"), **objects(f"{s3}/sweep")}
    assert stored["0/results/r.txt"] == b"r\n" and stored["t3/results/r.txt"] == b"r\n"
    written = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()]
    assert any("state" in p.parts for p in written)  # the state store is among them
    everything = [*(p.read_bytes() for p in written), *stored.values()]
    everything += [text.encode() for text in printed]
    for secret in (ACCESS_KEY, SECRET_KEY, SECRET_KEY[::-1]):
        assert not [blob for blob in everything if secret.encode() in blob]
