"""The package's layout shows where code runs (docs/architecture.md, "Where things live").

Read from the source, not from what happens to be imported: every ``import`` statement of
every file (module level, inside functions and under ``TYPE_CHECKING`` alike), with each
top-level module and each subpackage of ``rayweb`` one node.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "rayweb"
MAX_LINES = 450

# Where each node runs (see docs/architecture.md); the import rules follow from it.
DECLARE = {
    "app", "callforms", "classes", "decorators", "functions", "image", "options", "secret",
    "spec", "exception", "_compat", "objects", "dicts", "queues",
    "volume", "volfiles", "volstore", "volupload", "localfiles", "servers",
}  # fmt: skip
SHARED = {"common", "tokens", "urls"}
DRIVER = {"driver", "cli"}


def _node(module: str) -> str | None:
    """``rayweb.driver.serve`` -> ``driver``; the root facade ``rayweb`` is left out."""
    parts = module.split(".")
    if parts[0] != "rayweb" or len(parts) == 1:
        return None
    is_module = (PACKAGE / f"{parts[1]}.py").exists() or (PACKAGE / parts[1]).is_dir()
    return parts[1] if is_module else None  # `from .. import __version__` names no module


def _imports(path: Path) -> set[str]:
    """Absolute names of the rayweb modules ``path`` imports."""
    package = list(path.relative_to(PACKAGE.parent).parts[:-1])  # e.g. ["rayweb", "driver"]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            out.add(prefix)
            # `from . import exception` imports the module `rayweb.exception`
            out.update(f"{prefix}.{alias.name}" for alias in node.names)
    return {m for m in out if m == "rayweb" or m.startswith("rayweb.")}


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel == Path("__init__.py"):
            continue  # the public facade: it names everything, nothing imports it
        source = rel.parts[0].removesuffix(".py")
        targets = {_node(module) for module in _imports(path)} - {None, source}
        graph.setdefault(source, set()).update(t for t in targets if t is not None)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_has_no_cycles():
    graph = _graph()
    assert {"replica", "services", "driver", "cli", "compiler", "common"} <= graph.keys()
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_each_place_imports_only_what_it_may():
    graph = _graph()
    for node in DECLARE | SHARED:
        assert not graph[node] - DECLARE - SHARED, f"{node} imports {graph[node]}"
    assert not graph["replica"] & DRIVER, f"in-replica code imports {graph['replica'] & DRIVER}"
    assert not graph["services"] & (DRIVER | {"replica", "compiler"}), graph["services"]
    assert not graph["compiler"] & DRIVER
    # the caller's side of .remote(): wherever user code runs, so never driver-only code (it
    # compiles a class's variant, Cls.with_options, where it is first called)
    assert not graph["calls"] & (DRIVER | {"replica"}), graph["calls"]
    assert not (graph["replica"] | graph["services"]) & {"calls"}
    assert "driver" not in graph["common"] | graph["tokens"]


def test_declaring_and_the_cli_never_import_ray():
    """What the user declares is plain data; the CLI only parses and prints."""
    for path in [*PACKAGE.glob("*.py"), *(PACKAGE / "cli").glob("*.py")]:
        if path.stem in ("compiler", "entry"):
            continue  # the compiler builds Serve applications; entry runs inside Serve
        names = {
            alias.name
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            node.module or ""
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and not node.level
        }
        assert not {n for n in names if n == "ray" or n.startswith("ray.")}, path


def test_no_file_is_too_long():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"over {MAX_LINES} lines: {long}"
