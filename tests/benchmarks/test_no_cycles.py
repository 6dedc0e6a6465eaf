"""The benchmarks import one way. No module of ``benchmarks/`` imports itself back through
others, counting imports at module level and inside functions alike (only those under
``if TYPE_CHECKING:`` are left out: they never run); and the headline table
(``benchmarks.summary``) is built from the JSON alone: it imports no benchmark."""

from __future__ import annotations

from pathlib import Path

import benchmarks
from benchmarks.harness import BENCHMARKS
from tests.import_graph import closure, cycles, graph

PACKAGE = Path(benchmarks.__file__).parent


def test_no_module_of_the_benchmarks_imports_itself_back() -> None:
    edges = graph(PACKAGE)
    assert "benchmarks.summary" in edges["benchmarks.harness"]  # the graph sees the package
    found = cycles(edges)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_headline_table_reads_json_and_imports_no_benchmark() -> None:
    edges = graph(PACKAGE)
    reached = closure(edges, "benchmarks.summary")
    assert not reached & {f"benchmarks.{name}" for name in BENCHMARKS}, reached
    assert reached <= {"benchmarks.report"}, reached  # the shared formats, nothing else


def test_the_checker_counts_function_level_imports_and_skips_type_checking(
    tmp_path: Path,
) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    files = {
        "__init__.py": "",
        "a.py": "from pkg import b\n",
        "b.py": "def f():\n    from pkg.c import x\n    return x\n",
        "c.py": "from . import a\nx = 1\n",
        "d.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import e\n"
            "else:\n    import pkg.a\n"
        ),
        "e.py": "import pkg.d as d\n",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    edges = graph(package)
    assert edges["pkg.b"] == {"pkg.c"} and edges["pkg.c"] == {"pkg", "pkg.a"}
    assert edges["pkg.d"] == {"pkg.a"} and edges["pkg.e"] == {"pkg.d"}
    assert cycles(edges) == [["pkg.a", "pkg.b", "pkg.c"]]  # d <-> e only under TYPE_CHECKING
