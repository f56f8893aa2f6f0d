"""Import layering of the five packages, read from the source with ``ast`` (nothing is imported).

Rules: ``controllers`` (runs on the real robot) never imports ``twin`` or ``scenarios``; ``twin``
(the simulated world) never imports ``controllers``, ``hw_bridge`` or ``scenarios``; ``hw_bridge``
never imports ``controllers`` or ``scenarios``; no import cycle between modules. Imports inside
functions count too (``ast.walk`` sees them): a lazy import is still a dependency.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("twin", "scenes", "controllers", "hw_bridge", "scenarios")
FORBIDDEN = {
    "controllers": {"twin", "scenarios"},
    "twin": {"controllers", "hw_bridge", "scenarios"},
    "hw_bridge": {"controllers", "scenarios"},
}
#: the interface's errors live in hw_bridge.errors; the interface does not re-export them
ERRORS = {"HardwareError", "LifecycleError", "SafetyStop", "CommandRejected", "ConnectionLost"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = _modules()
TREES = {m: ast.parse(p.read_text(encoding="utf-8"), filename=str(p)) for m, p in MODULES.items()}


def _absolute(module: str, node: ast.ImportFrom) -> str | None:
    """The absolute module name a ``from ... import`` refers to (relative imports resolved)."""
    if node.level == 0:
        return node.module
    package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
    base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
    return ".".join(base + ([node.module] if node.module else [])) or None


def _imported_names(module: str) -> set[str]:
    """Every module name ``module`` imports anywhere in its file (top level, functions, try blocks)."""
    names: set[str] = set()
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, node)
            if target:
                names.add(target)
                names.update(f"{target}.{a.name}" for a in node.names)
    return names


def _dependencies() -> dict[str, set[str]]:
    """Module -> the project modules it imports (edges of the import graph)."""
    return {m: {t for t in _imported_names(m) if t in MODULES and t != m} for m in MODULES}


DEPS = _dependencies()


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; the components of more than one module (the cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_every_package_is_found():
    for pkg in PACKAGES:
        assert pkg in MODULES, f"{pkg}/__init__.py missing"
    assert "hw_bridge.interface" in MODULES and "hw_bridge.test_peers.sas_driver" in MODULES


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_never_imports_the_layers_above(layer):
    bad = sorted(f"{m} -> {t}" for m, deps in DEPS.items() if m.split(".")[0] == layer
                 for t in deps if t.split(".")[0] in FORBIDDEN[layer])
    assert not bad, f"{layer} must not import {sorted(FORBIDDEN[layer])}:\n" + "\n".join(bad)


def test_no_import_cycles():
    cycles = _strongly_connected(DEPS)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_errors_are_imported_from_hw_bridge_errors():
    """``from hw_bridge.interface import SafetyStop`` would only work by accident (the interface's own
    import of it); every module names hw_bridge.errors."""
    files = {**MODULES, **{f"tests.{p.stem}": p for p in sorted((ROOT / "tests").glob("*.py"))}}
    bad = []
    for m, path in files.items():
        tree = TREES.get(m) or ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "hw_bridge.interface":
                bad += [f"{m}: {a.name}" for a in node.names if a.name in ERRORS]
    assert not bad, "import these from hw_bridge.errors:\n" + "\n".join(bad)


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": set()}
    assert sorted(_strongly_connected(graph)) == [["a", "b", "c"], ["d", "e"]]


def test_lazy_and_relative_imports_count():
    tree = ast.parse("def f():\n    from twin.world import TwinWorld\n    from .x import y\n")
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names.add(node.module)
    assert "twin.world" in names and "x" in names
    node = next(n for n in ast.walk(ast.parse("from .errors import HardwareError")) if isinstance(n, ast.ImportFrom))
    assert _absolute("hw_bridge.interface", node) == "hw_bridge.errors"
