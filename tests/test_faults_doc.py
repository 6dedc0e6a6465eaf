"""docs/faults.md lists only what a test proves: every test it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "faults.md").read_text()


def test_every_test_the_fault_list_names_exists():
    named = re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)`", DOC)
    assert len(named) >= 50
    missing = [
        f"{path}::{name}"
        for path, name in named
        if not re.search(rf"^(async )?def {name}\(", (ROOT / path).read_text(), re.M)
    ]
    assert missing == []


def test_every_row_names_a_test():
    rows = [line for line in DOC.splitlines() if line.startswith("| ") and "---" not in line]
    rows = [row for row in rows if not row.startswith("| Fault |")]
    assert rows and all("::test_" in row.rsplit(" | ", 1)[-1] for row in rows)


def test_the_readme_links_it():
    assert "docs/faults.md" in (ROOT / "README.md").read_text()
