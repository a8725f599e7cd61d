"""A small Kubernetes API server for the tests: the few calls KubernetesExecutor makes.

It keeps Secrets, Jobs and Pods in memory, answers like the real API server (status
codes, Status bodies, uids), and records every request so tests can check the calls
themselves. It runs no pods: tests play the kubelet (tests/test_sweep_kubernetes.py).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

_ROUTES = [
    (
        "secrets",
        re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/secrets(?:/(?P<name>[^/]+))?$"),
    ),
    ("jobs", re.compile(r"^/apis/batch/v1/namespaces/(?P<ns>[^/]+)/jobs(?:/(?P<name>[^/]+))?$")),
    ("pods", re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods$")),
]
_KINDS = {"secrets": "Secret", "jobs": "Job"}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str | None
    authorization: str | None
    body: Any


@dataclass
class FakeKube:
    """State and request log; ``forbid`` makes every write answer 403."""

    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    pods: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    forbid: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get(("jobs", namespace, name))

    def only_job(self) -> dict[str, Any]:
        jobs = [obj for (kind, _, _), obj in self.objects.items() if kind == "jobs"]
        assert len(jobs) == 1, jobs
        return jobs[0]

    def secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """The decoded data of Secret ``name``, or None."""
        found = self.objects.get(("secrets", namespace, name))
        if found is None:
            return None
        return {k: base64.b64decode(v).decode() for k, v in found.get("data", {}).items()}

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests]

    def remove_job(self, namespace: str, name: str) -> None:
        """What the garbage collector does when foreground deletion has finished."""
        with self.lock:
            job = self.objects.pop(("jobs", namespace, name))
            uid = job["metadata"]["uid"]
            for key, obj in list(self.objects.items()):
                owners = obj["metadata"].get("ownerReferences", [])
                if any(o["uid"] == uid for o in owners):
                    del self.objects[key]

    def kubeconfig(self, directory: Path, server: str) -> Path:
        path = directory / "kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": server}}],
            "users": [{"name": "tester", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tester"}}],
            "current-context": "fake",
        }
        path.write_text(json.dumps(config))
        return path


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _answer(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        kube = self.server.kube
        kube.requests.append(
            Request(
                self.command,
                url.path,
                parse_qs(url.query),
                self.headers.get("Content-Type"),
                self.headers.get("Authorization"),
                body,
            )
        )
        for kind, pattern in _ROUTES:
            match = pattern.match(url.path)
            if match is not None:
                with kube.lock:
                    code, answer = self._route(
                        kube, kind, match["ns"], match.groupdict().get("name"), body, url
                    )
                self._answer(code, answer)
                return
        self._answer(404, _status(404, "NotFound", f"no route for {url.path}"))

    def _route(
        self, kube: FakeKube, kind: str, namespace: str, name: str | None, body: Any, url: Any
    ) -> tuple[int, dict[str, Any]]:
        if kind == "pods":
            selector = parse_qs(url.query).get("labelSelector", [""])[0]
            key, _, value = selector.partition("=")
            items = [p for p in kube.pods if p["metadata"]["labels"].get(key) == value]
            return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
        key = (kind, namespace, name or "")
        if self.command == "POST" and name is None:
            if kube.forbid:
                return 403, _status(403, "Forbidden", f"{kind} is forbidden")
            name = body["metadata"]["name"]
            key = (kind, namespace, name)
            if key in kube.objects:
                return 409, _status(409, "AlreadyExists", f'{kind} "{name}" already exists')
            created = json.loads(json.dumps(body))
            created["metadata"].update(uid=str(uuid.uuid4()), namespace=namespace)
            if kind == "jobs":
                created["status"] = {}
            kube.objects[key] = created
            return 201, created
        if key not in kube.objects:
            return 404, _status(404, "NotFound", f'{kind} "{name}" not found')
        obj = kube.objects[key]
        if self.command == "GET":
            return 200, obj
        if self.command == "PATCH":
            obj["metadata"].update(body.get("metadata", {}))
            return 200, obj
        if self.command == "DELETE":
            # Foreground: the object stays, marked, until its dependents are gone.
            obj["metadata"]["deletionTimestamp"] = "2026-11-21T00:00:00Z"
            obj["metadata"]["finalizers"] = ["foregroundDeletion"]
            return 200, obj
        return 405, _status(405, "MethodNotAllowed", self.command)

    do_GET = do_POST = do_PATCH = do_DELETE = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, kube: FakeKube) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.kube = kube


def serve(kube: FakeKube) -> tuple[str, _Server]:
    """Start answering on a free port in a thread; returns the URL and the server."""
    server = _Server(kube)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server
