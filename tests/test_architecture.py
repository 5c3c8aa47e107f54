"""The layering ARCHITECTURE.md promises, checked on the source: data flows one way
(base -> competition -> features -> ensembles -> submissions -> harness) and no module
imports a later layer, lazily inside a function included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("base", "competition", "features", "ensembles", "submissions", "harness")


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & set(LAYERS)


@pytest.mark.parametrize("layer", LAYERS)
def test_no_stage_imports_a_later_one(layer):
    allowed = set(LAYERS[:LAYERS.index(layer) + 1])
    files = sorted((REPO / layer).rglob("*.py"))
    assert files, f"{layer}/ has no modules"
    wrong = {f"{path.relative_to(REPO)} imports {sorted(_imported_packages(path) - allowed)}"
             for path in files if _imported_packages(path) - allowed}
    assert not wrong, "\n".join(sorted(wrong))


def _imported_modules(path: Path, package: str) -> set[str]:
    """The modules of `package` that `path` imports, lazily inside a function included:
    `from package.module import x`, `import package.module`, `from package import module`."""
    modules = {p.stem for p in (REPO / package).glob("*.py")}
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names
                      if alias.name.startswith(f"{package}.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith(f"{package}."):
                found.add(node.module.split(".")[1])
            elif node.module == package:
                found |= {alias.name for alias in node.names}
    return (found & modules) - {path.stem}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of `graph` (module -> the modules it imports), or []."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[str] = []

    def visit(module: str) -> list[str]:
        state[module] = "open"
        path.append(module)
        for other in sorted(graph.get(module, ())):
            if state.get(other) == "open":
                return path[path.index(other):] + [other]
            if other not in state:
                found = visit(other)
                if found:
                    return found
        path.pop()
        state[module] = "done"
        return []

    for module in sorted(graph):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return []


@pytest.mark.parametrize("layer", LAYERS)
def test_no_import_circle_inside_a_stage(layer):
    graph = {path.stem: _imported_modules(path, layer)
             for path in sorted((REPO / layer).glob("*.py"))}
    cycle = _cycle(graph)
    assert not cycle, f"{layer}/ modules import each other in a circle: {' -> '.join(cycle)}"


def test_the_circle_check_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []
