"""The project's import structure: no cycles, and no import from a lower layer up to a higher one.

Parses every project module (function-level imports included) with `ast`; nothing is imported.
Layers, bottom to top (a module may import its own package and any lower layer):

    common  <  mad, features, nerf  <  retrieval, inerf, anomaly  <  evaluation  <  omniposead  <  entry points

Entry points are the command lines (anomaly_nerf_lego.py, auroc_test.py, predict.py, `python train_nerf.py`,
`python -m mad.synthesize`, benchmarks/): they may import anything, and nothing imports them.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_LAYERS = {"common": 0, "mad": 1, "features": 1, "nerf": 1, "retrieval": 2, "inerf": 2, "anomaly": 2,
                  "evaluation": 3, "omniposead": 4}
ENTRY_POINTS = {"anomaly_nerf_lego", "auroc_test", "train_nerf", "predict"}
ENTRY_LAYER = 5


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    """Every module of the project (packages, top-level scripts, benchmarks), tests excluded."""
    modules = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).parts
        if rel[0] == "tests" or any(part.startswith(".") for part in rel):
            continue
        modules[module_name(path)] = path
    return modules


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in the file (`import a.b`, `from a.b import c` -> a.b or a.b.c)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def layer(module: str) -> int:
    top_level_script = "." not in module and module not in PACKAGE_LAYERS
    if module in ENTRY_POINTS or module.startswith("benchmarks") or top_level_script:
        return ENTRY_LAYER
    return PACKAGE_LAYERS[module.split(".")[0]]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}   # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_the_project(graph):
    assert {"omniposead.pipeline", "nerf.trainer", "evaluation.metrics.aupro", "anomaly_nerf_lego"} <= set(graph)
    assert "nerf.renderer" in graph["nerf.trainer"] and "omniposead.config" in graph["omniposead.pipeline"]


def test_no_import_cycle(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle(graph):
    planted = {k: set(v) for k, v in graph.items()}
    planted["common.io"].add("omniposead.pipeline")
    cycle = find_cycle(planted)
    assert cycle is not None and cycle[0] == cycle[-1]


def test_no_import_from_a_lower_layer_to_a_higher_one(graph):
    upward = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})" for m, deps in graph.items() for d in deps
              if layer(d) > layer(m)]
    assert not upward, "\n".join(upward)


def test_same_layer_packages_stay_apart(graph):
    sideways = [f"{m} imports {d}" for m, deps in graph.items() for d in deps
                if layer(d) == layer(m) < ENTRY_LAYER and m.split(".")[0] != d.split(".")[0]]
    assert not sideways, "\n".join(sideways)


def test_nothing_imports_an_entry_point(graph):
    users = [f"{m} imports {d}" for m, deps in graph.items() for d in deps
             if layer(d) == ENTRY_LAYER and not m.startswith("benchmarks")]
    assert not users, "\n".join(users)


def test_the_data_folder_holds_no_code():
    """data/ holds datasets only (git-ignored); the code that reads and makes them is the mad package."""
    assert not list((ROOT / "data").rglob("*.py")), "code under data/: move it to the mad package"
    assert "mad" in PACKAGE_LAYERS and (ROOT / "mad" / "loader.py").is_file()
