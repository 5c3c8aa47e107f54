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
