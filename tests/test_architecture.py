"""The architecture, checked: no import cycles anywhere in the project; imports that go one
way between the layers (storage <- sisa <- orchestrator) and between the rooms of sisa;
sisa never imports Ray; only the store's own module touches its bytes.
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


# The rooms of sisa, and the rooms each may import. The base modules (config, ids, faults)
# import no room; training never imports deletion code; evidence may read everything.
ROOMS: dict[str, set[str]] = {
    "base": set(),
    "store": {"base"},
    "data": {"base"},
    "training": {"base", "store", "data"},
    "deletion": {"base", "store", "data", "training"},
    "serving": {"base", "store", "data", "training", "deletion"},
    "evidence": {"base", "store", "data", "training", "deletion", "serving"},
}


def room_of(module: str) -> str | None:
    """The room of a module of sisa (``sisa.deletion.batch`` -> deletion), ``base`` for a
    top-level module; None for the package itself, whose exports name every room."""
    parts = module.split(".")
    if parts == ["sisa"]:
        return None
    return parts[1] if parts[1] in ROOMS else "base"


def room_violations(edges: dict[str, set[str]]) -> list[str]:
    out = []
    for module, deps in sorted(edges.items()):
        if not module.startswith("sisa") or (room := room_of(module)) is None:
            continue
        for dep in sorted(d for d in deps if d.startswith("sisa")):
            other = room_of(dep)
            if other is not None and other != room and other not in ROOMS[room]:
                out.append(f"{module} ({room}) imports {dep} ({other})")
    return out


def test_every_module_of_sisa_is_in_a_room():
    top = {p.stem for p in (ROOT / "sisa").glob("*.py")} - {"__init__"}
    rooms = {p.name for p in (ROOT / "sisa").iterdir() if (p / "__init__.py").exists()}
    assert top == {"ids", "faults"}  # the base, with the config package
    assert rooms == set(ROOMS) - {"base"} | {"config"}


def test_rooms_import_only_the_rooms_below_them(project):
    assert project["sisa.training.train"]  # the graph sees the rooms' imports
    assert room_violations(project) == []


def test_the_room_check_finds_a_violation():
    edges = {"sisa.training.train": {"sisa.deletion.cost", "sisa.store.layout", "sisa.config"}}
    assert room_violations(edges) == [
        "sisa.training.train (training) imports sisa.deletion.cost (deletion)"
    ]


def fs_reach_ins(path: Path) -> list[int]:
    """Lines where code reads the ``fs`` attribute of something other than ``self``."""
    tree = ast.parse(path.read_text())
    return [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute)
        and n.attr == "fs"
        and not (isinstance(n.value, ast.Name) and n.value.id == "self")
    ]


def test_only_the_store_module_touches_the_bytes():
    """``SisaStore`` owns the paths and the bytes; the rest of the project goes through it."""
    owner = ROOT / "sisa" / "store" / "artifacts.py"
    found = {
        str(path.relative_to(ROOT)): lines
        for package in ("sisa", "orchestrator", "benchmarks")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != owner and (lines := fs_reach_ins(path))
    }
    assert found == {}


def test_the_reach_in_check_finds_one(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f(store):\n    return store.fs.walk('')\n\nself.fs = 1\n")
    assert fs_reach_ins(path) == [2]


def positional_records(path: Path) -> list[str]:
    """Dataclasses of four or more fields that can be built positionally."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ClassDef):
            continue
        for deco in node.decorator_list:
            text = ast.unparse(deco)
            if (
                text.startswith(("dataclass", "dataclasses.dataclass"))
                and "kw_only=True" not in text
            ):
                fields = [b for b in node.body if isinstance(b, ast.AnnAssign)]
                if len(fields) >= 4:
                    out.append(node.name)
    return out


def test_records_of_four_or_more_fields_are_built_with_keywords():
    """A record such as ``ShardResult`` built from many positional arguments breaks
    silently when a field is added or two are swapped."""
    found = {
        str(path.relative_to(ROOT)): names
        for path in sorted((ROOT / "sisa").rglob("*.py"))
        if (names := positional_records(path))
    }
    assert found == {}


def test_the_record_check_finds_one(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(
        "from dataclasses import dataclass\n"
        "@dataclass(frozen=True)\nclass A:\n    a: int\n    b: int\n    c: int\n    d: int\n"
        "@dataclass(frozen=True, kw_only=True)\nclass B:\n    a: int\n    b: int\n    c: int\n"
        "    d: int\n"
    )
    assert positional_records(path) == ["A"]
