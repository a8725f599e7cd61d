"""The shape of the source tree: no import cycles, event loops only at the edges, small modules.

Every module under src/ is parsed (not imported): all its imports count, at module level,
inside functions and under ``if TYPE_CHECKING:`` alike, and so do the packages whose
``__init__`` an import runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "saturn_async"
MAX_LINES = 400
LOOP_OWNERS = (
    f"{PACKAGE}.cli",
    f"{PACKAGE}.executors.worker",  # run_batches: what a pool or remote engine calls
    f"{PACKAGE}.supervisor.watchdog_process",  # the watchdog's own process
)


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _inside(name: str, package: str) -> bool:
    return name == package or name.startswith(f"{package}.")


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> set[str]:
    """The modules of this package that module ``name`` imports, anywhere in it."""
    tree = ast.parse(MODULES[name].read_text(), str(MODULES[name]))
    here = name if _is_package(name) else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(_known(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in MODULES else _known(base))
    targets.discard("")
    # Importing a.b.c runs a/b/__init__.py first: each package above a target counts,
    # except those above the importer (they ran before it).
    for target in list(targets):
        targets.update(p for p in _packages_above(target) if p not in _packages_above(name))
    targets.discard(name)
    return targets


def _packages_above(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:n]) for n in range(1, len(parts))} & MODULES.keys()


def _known(dotted: str) -> str:
    """The longest prefix of ``dotted`` that is a module of ours ('' when none)."""
    parts = dotted.split(".")
    while parts:
        if ".".join(parts) in MODULES:
            return ".".join(parts)
        parts.pop()
    return ""


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(graph, component) for component in components]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module, as a path back to it."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    return [*paths[node], start]
                if target not in paths:
                    paths[target] = [*paths[node], target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle in {component}")


def test_no_import_cycles() -> None:
    graph = {name: _imports(name) for name in MODULES}
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_event_loops_start_only_at_the_edges() -> None:
    """Library code is async all the way down: only the CLI and the worker-side entries
    start an event loop (``anyio.run``)."""
    starting = []
    for name, path in MODULES.items():
        if any(_inside(name, owner) for owner in LOOP_OWNERS):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            called = (
                isinstance(node, ast.Attribute)
                and node.attr == "run"
                and isinstance(node.value, ast.Name)
                and node.value.id == "anyio"
            )
            imported = (
                isinstance(node, ast.ImportFrom)
                and node.module == "anyio"
                and any(alias.name == "run" for alias in node.names)
            )
            if called or imported:
                starting.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not starting, "anyio.run outside cli/ and the worker entries: " + ", ".join(starting)


def test_modules_are_small() -> None:
    long = {
        str(path.relative_to(SRC)): lines
        for path in MODULES.values()
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"
