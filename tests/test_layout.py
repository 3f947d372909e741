"""Rules of the house that protect themselves: front-ends are leaves, imports form no cycle.

The graph is read from the source (every ``import`` at any depth, lazy ones inside
functions included; ``if TYPE_CHECKING:`` blocks left out), so it holds for every code
path, not just the ones a test happens to import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lanternlm

PACKAGE = Path(lanternlm.__file__).parent
FRONT_ENDS = ("lanternlm.cli", "lanternlm.terminal", "lanternlm.serve")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported(name: str, path: Path) -> set[str]:
    """The package's modules that module ``name`` (file ``path``) imports."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package[:len(package) - child.level + 1] + ([child.module] if child.module else [])
                    module = ".".join(base)
                else:
                    module = child.module or ""
                for alias in child.names:  # `from . import x` may name a submodule
                    found.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in MODULES else module)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imported(name, path) for name, path in MODULES.items()}


def test_the_graph_sees_the_packages_imports():
    assert "lanternlm.model" in GRAPH["lanternlm.engine"]  # a module-level import
    assert "lanternlm.terminal" in GRAPH["lanternlm.cli"]  # imports inside functions count too
    assert "lanternlm.train.distributed" in GRAPH["lanternlm.train.pretrain"]  # `from . import distributed`


def test_nothing_below_a_front_end_imports_one():
    offenders = {name: sorted(d for d in deps if d.startswith(FRONT_ENDS))
                 for name, deps in GRAPH.items() if not name.startswith(FRONT_ENDS)}
    assert {name: deps for name, deps in offenders.items() if deps} == {}


def test_the_imports_form_no_cycle():
    """Depth-first search; a back edge closes a cycle, reported as the path around it."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[str] = []
    cycles: list[list[str]] = []

    def walk(name: str) -> None:
        state[name] = "open"
        path.append(name)
        for dep in sorted(GRAPH[name]):
            if state.get(dep) == "open":
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                walk(dep)
        path.pop()
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            walk(name)
    assert cycles == []
