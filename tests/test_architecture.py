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
            # ``from models import train`` may name a module: count it as one too
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names if a.name != "*"]
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


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def runtime_imports_of(path: Path) -> list[tuple[int, str]]:
    """As :func:`imports_of`, less the imports under ``if TYPE_CHECKING:`` (never run)."""
    tree = ast.parse(path.read_text(), str(path))
    typing_only = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only |= {n.lineno for stmt in node.body for n in ast.walk(stmt) if hasattr(n, "lineno")}
    return [(line, name) for line, name in imports_of(path) if line not in typing_only]


def _import_graph() -> dict[str, list[tuple[int, str]]]:
    """Each of our modules -> what it imports when run (line, name), even inside functions."""
    return {_module_of(p): runtime_imports_of(p) for pkg in OURS for p in _files(pkg)}


def _ours(name: str, modules: dict) -> str | None:
    """The module of ours an imported name lands in (``a.b.c``: ``a.b.c`` if a module, else ``a.b``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def forbidden_reached(graph: dict[str, list[tuple[int, str]]], package: str = "edge") -> list[str]:
    """The chains by which ``package``'s modules reach, through our modules, training code or the
    hub's side (as the edge must not)."""
    bad = []
    for start in sorted(m for m in graph if m.split(".")[0] == package):
        seen = {start: [start]}
        todo = [start]
        while todo:
            mod = todo.pop()
            for line, name in graph[mod]:
                chain = seen[mod]
                if name.startswith(EDGE_FORBIDDEN) or name.split(".")[0] in ("hub", "agents"):
                    bad.append(" -> ".join(chain) + f" -> {name} (line {line})")
                    continue
                target = _ours(name, graph)
                if target is not None and target not in seen:
                    seen[target] = [*chain, target]
                    todo.append(target)
    return sorted(set(bad))


def test_the_edge_reaches_no_training_code_even_indirectly() -> None:
    """Follows imports through our modules: scikit-learn imported by a module the edge imports
    (``models.runtime``, say) is on the box as surely as one the edge imports itself."""
    bad = forbidden_reached(_import_graph())
    assert not bad, "the edge reaches what it must not:\n" + "\n".join(bad)


def test_the_indirect_check_catches_a_forbidden_import_two_steps_away(tmp_path: Path) -> None:
    """On a made-up tree: edge/x imports models/y, which imports models/w, which imports sklearn
    inside a function; models/z's type-only import does not count."""
    for name, text in {"edge/x.py": "from models.y import score\n",
                       "models/y.py": "from models import w\n",
                       "models/w.py": "def fit():\n    import sklearn.linear_model\n",
                       "models/z.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import sklearn\n",
                       "edge/v.py": "import models.z\n"}.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = {n.replace("/", ".")[:-3]: runtime_imports_of(tmp_path / n)
             for n in ("edge/x.py", "models/y.py", "models/w.py", "models/z.py", "edge/v.py")}
    assert forbidden_reached(graph) == ["edge.x -> models.y -> models.w -> sklearn.linear_model (line 2)"]
