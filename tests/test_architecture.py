"""The house rules of the layout, checked on the source: no import cycle, the shared cores know no method, a
method reaches no other method (but the static model its experts and backbones are), and the registry lists
every method package."""

from __future__ import annotations

import ast
from pathlib import Path

import dynmm.methods

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "dynmm"
CORES = (
    "dynmm.errors",
    "dynmm.io",
    "dynmm.specs",
    "dynmm.validation",
    "dynmm.modes",
    "dynmm.routing",
    "dynmm.cost",
    "dynmm.relax",
    "dynmm.losses",
    "dynmm.config",
    "dynmm.console",
    "dynmm.nn",
    "dynmm.data",
    "dynmm.engine",
    "dynmm.report",
    "dynmm.deploy",
)
ENTRY_POINTS = ("dynmm.cli", "dynmm.api", "dynmm.demo", "dynmm.tune")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the dynmm modules it imports, at the top or inside functions (a lazy import is still a
    dependency). `from a import b` counts as importing a.b when b is a module."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                found.add(base)
                found |= {f"{base}.{alias.name}" for alias in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "dynmm.methods.modality_level.recipe" in graph["dynmm.methods.modality_level.method"]  # inside a hook
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_anywhere_in_src():
    assert find_cycle(import_graph()) is None


def test_shared_cores_import_no_method_and_no_entry_point():
    offending = [
        (module, dep)
        for module, deps in import_graph().items()
        if any(in_package(module, core) for core in CORES)
        for dep in deps
        if in_package(dep, "dynmm.methods") or dep in ENTRY_POINTS
    ]
    assert offending == []


def test_a_method_reaches_no_other_method_but_the_static_model():
    """DynMM's experts and MFAS's backbones are static runs; nothing else crosses between methods."""
    names = {p.parent.name for p in (PACKAGE / "methods").glob("*/method.py")}
    offending = []
    for module, deps in import_graph().items():
        own = module.split(".")[2] if in_package(module, "dynmm.methods") and module.count(".") >= 3 else None
        if own not in names:
            continue
        for dep in deps:
            other = dep.split(".")[2] if dep.count(".") >= 2 and in_package(dep, "dynmm.methods") else None
            if other in names and other not in (own, "static"):
                offending.append((module, dep))
    assert offending == []


def test_every_method_package_is_registered_once():
    packages = sorted(p.parent.name for p in (PACKAGE / "methods").glob("*/method.py"))
    registered = sorted(type(m).__module__.split(".")[2] for m in dynmm.methods.METHODS)
    assert registered == packages
    assert len({m.name for m in dynmm.methods.METHODS}) == len(dynmm.methods.METHODS)
    sections = [m.section for m in dynmm.methods.METHODS if m.section is not None]
    assert len(set(sections)) == len(sections)
