"""The architecture, checked: no import cycles anywhere in the project, and imports that go
one way between the layers (storage <- sisa <- orchestrator); sisa never imports Ray.
Every import counts, at module level or inside a function; only ``if TYPE_CHECKING:``
blocks (annotations) are left out."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.import_graph import cycles, graph

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("storage", "sisa", "orchestrator", "benchmarks")


@pytest.fixture(scope="module")
def project() -> dict[str, set[str]]:
    return graph(*(ROOT / package for package in PACKAGES))


def test_no_import_cycles(project):
    assert cycles(project) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_layers_import_one_way(project):
    assert project["sisa.deletion.batch"] & {
        "sisa.store.journal",
        "storage",
    }  # the graph sees imports
    for module, deps in project.items():
        if module.startswith("storage"):
            assert not {d for d in deps if not d.startswith("storage")}, module
        if module.startswith("sisa"):
            assert not {d for d in deps if d.startswith(("orchestrator", "benchmarks"))}, module


def test_sisa_never_imports_ray():
    for path in (ROOT / "sisa").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [n for n in names if n == "ray" or n.startswith("ray.")], path
