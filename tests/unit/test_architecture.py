"""The package's shape, checked: no import cycles, and a sans-I/O core.

The import graph is read from the source with :mod:`ast` -- every import, also
those inside functions and ``if TYPE_CHECKING:`` blocks, since a cycle that only
type checking sees is still a knot a reader has to untie.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "tcpstack"

#: Layers that must not do I/O, read the clock or know about the event loop
#: (ARCHITECTURE: "Nothing below aio/ and link/ imports asyncio or reads the clock").
SANS_IO = ("tcpstack.wire", "tcpstack.tcp", "tcpstack.stack")
FORBIDDEN_IN_SANS_IO = {"asyncio", "uvloop", "time", "socket", "select", "selectors",
                        "threading", "subprocess", "os"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Modules of the package (and top-level external names) that ``path`` imports."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                out.add(sub if sub in known else mod)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, name, known) & known for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a self-import."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _without_package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's ``__init__`` re-exports its modules; an import of the package by
    one of its own modules is not a knot in the code, so those edges are left out."""
    out: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        out[mod] = {d for d in deps if not (mod.startswith(d + ".") and d != mod)}
    return out


def test_the_package_has_no_import_cycles() -> None:
    cycles = _cycles(_without_package_inits(_graph()))
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_cycle_finder_finds_a_cycle() -> None:
    """The checker itself works: a two-module knot is reported."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_engine_and_wire_layers_do_no_io_and_read_no_clock() -> None:
    modules = _modules()
    offenders = {}
    for name, path in modules.items():
        if not name.startswith(SANS_IO):
            continue
        imported = {imp.split(".")[0] for imp in _imports(path, name, set(modules))}
        bad = imported & FORBIDDEN_IN_SANS_IO
        if bad:
            offenders[name] = sorted(bad)
    assert offenders == {}


def test_the_engine_does_not_import_the_layers_above_it() -> None:
    graph = _graph()
    above = ("tcpstack.aio", "tcpstack.link", "tcpstack.apps", "tcpstack.cli")
    for name, deps in graph.items():
        if name.startswith(("tcpstack.tcp", "tcpstack.wire")):
            assert not {d for d in deps if d.startswith(above)}, name
