"""The command line and the demo use sisa as any user would: ``from sisa import X``, never a
sisa submodule, so moving code inside sisa cannot break them unless a public name goes."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = sorted((ROOT / "orchestrator" / "cli").glob("*.py")) + [ROOT / "orchestrator" / "demo.py"]


def submodule_imports(source: str) -> list[str]:
    """Each sisa submodule that ``source`` imports, anywhere: at module level, inside a
    function, or under ``if TYPE_CHECKING:``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.append(node.module or "")
    return [name for name in found if name.startswith("sisa.")]


def test_the_cli_and_the_demo_import_only_sisa_itself():
    assert len(CLIENTS) > 5  # the package's modules were found
    for path in CLIENTS:
        assert submodule_imports(path.read_text()) == [], path.relative_to(ROOT)


def test_the_check_sees_every_kind_of_submodule_import():
    source = """
import sisa
from sisa import SisaStore
import sisa.ids
from sisa.config import load_config
def command():
    from sisa.store.journal import Journal
"""
    assert submodule_imports(source) == ["sisa.ids", "sisa.config", "sisa.store.journal"]
