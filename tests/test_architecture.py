"""Imports flow one way: protocols <- models <- edge; protocols, models <- agents <- hub;
protocols <- export, simulator; export <- hub (its export routes). Checked on the source, statically (every import, even inside
functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
OURS = {"protocols", "models", "edge", "hub", "agents", "export", "simulator", "sentinel_cli"}

# package -> our packages it may import
ALLOWED = {
    "protocols": set(),
    "models": {"protocols"},
    "edge": {"protocols", "models"},
    "agents": {"protocols", "models"},
    "hub": {"protocols", "models", "agents", "export"},  # the hub streams exports through export/'s writers
    "export": {"protocols"},
    "simulator": {"protocols", "models"},
    "sentinel_cli": OURS,
}
# the edge box installs neither scikit-learn nor the training side of models
EDGE_FORBIDDEN = ("sklearn", "skl2onnx", "models.train", "models.export", "models.evaluation")


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def _files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_flow_one_way(package: str) -> None:
    bad = []
    for path in _files(package):
        for line, name in imports_of(path):
            top = name.split(".")[0]
            if top in OURS and top != package and top not in ALLOWED[package]:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_edge_never_imports_training_code() -> None:
    bad = [f"{p.relative_to(REPO)}:{line} imports {name}"
           for p in _files("edge") for line, name in imports_of(p)
           if name.startswith(EDGE_FORBIDDEN)]
    assert not bad, "\n".join(bad)
