"""The architecture of DESIGN.md section 13 holds: no import cycles, ``agent.wire`` imports nothing
else of the project, ``drivers`` nothing of ``agent``, and test equipment lives in ``agent.sim``.

Imports are read from the source (every ``import`` statement, also inside functions, except those
under ``if TYPE_CHECKING:``, which only type checkers follow)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "drivers", "firmware_hooks")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports at run time."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            # "from package import module" imports the module, "from module import name" the
            # module (a submodule importing a sibling runs the package's __init__ first, which
            # is Python's doing, not a dependency of the design)
            targets = [f"{base}.{alias.name}" for alias in node.names]
            if not any(target in known for target in targets):
                targets = [base]
        else:
            for child in ast.iter_child_nodes(node):
                visit(child)
            return
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def _package_of(module: str) -> str:
    return module.split(".")[0]


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_wire_imports_nothing_else_of_the_project() -> None:
    graph = _graph()
    outside = {
        (name, target)
        for name, targets in graph.items()
        if name.startswith("agent.wire")
        for target in targets
        if not target.startswith("agent.wire")
    }
    assert outside == set()


def test_drivers_import_nothing_of_agent() -> None:
    graph = _graph()
    wrong = {
        (name, target)
        for name, targets in graph.items()
        if _package_of(name) == "drivers"
        for target in targets
        if _package_of(target) == "agent"
    }
    assert wrong == set()


def test_the_service_does_not_import_test_equipment() -> None:
    """Only the simulators' own commands and the demo reach into ``agent.sim``."""
    graph = _graph()
    allowed = {"agent.cli.sim", "agent.cli.demo", "agent.demo"}
    wrong = {
        (name, target)
        for name, targets in graph.items()
        if not name.startswith("agent.sim") and name not in allowed
        for target in targets
        if target.startswith("agent.sim")
    }
    assert wrong == set()


def test_the_service_never_waits_with_asyncio_wait_for() -> None:
    """On Python 3.11, ``asyncio.wait_for`` returns its result, and the caller's cancellation is
    lost, when both come in one loop iteration: a hook that finished as the service stopped left
    the stop waiting for ever. ``asyncio.timeout`` keeps the cancellation (the simulators, test
    equipment, may use either)."""
    found = []
    for name, path in _modules().items():
        if name.startswith("agent.sim"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "wait_for"
                and isinstance(node.value, ast.Name)
                and node.value.id == "asyncio"
            ):
                found.append(f"{name}:{node.lineno}")
    assert found == []


def test_the_walker_sees_a_cycle_when_there_is_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
