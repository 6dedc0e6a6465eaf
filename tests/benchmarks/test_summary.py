"""The README's headline table is generated from the results beside it, and says "no"
where a goal is missed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks import summary
from benchmarks.harness import ROOT, main, run

DOCS = ROOT / "docs" / "benchmarks"


def block(text: str) -> str:
    return text.split(summary.BEGIN, 1)[1].split(summary.END, 1)[0].strip()


def test_the_committed_headline_is_the_committed_results() -> None:
    """Edit a result or the table by hand and this fails: rerun `python -m benchmarks summary`."""
    readme = (DOCS / "README.md").read_text()
    assert block(readme) == summary.table(DOCS)
    for name in summary.HEADLINES:  # every benchmark has committed full-suite results
        assert json.loads((DOCS / f"{name}.json").read_text())["suite"] == "full"


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    argv = ["run", "--suite", "quick", "--only", "speedup", "--only", "lookup"]
    assert main([*argv, "--out", str(out)]) == 0
    return out


def test_the_table_reports_the_headline_point_and_its_verdict(quick: Path) -> None:
    figures = json.loads((quick / "speedup.json").read_text())["figures"]
    top = max(figures["points"], key=lambda p: (p["shards"], p["slices"]))
    text = summary.table(quick)
    name = f"{top['dataset']} S={top['shards']} R={top['slices']}"
    row = next(line for line in text.splitlines() if name in line)
    assert f"{top['speedup']:.1f}x" in row and f"{top['of_ideal']:.2f} of ideal" in row
    paper = top["dataset"] in figures["paper_speedup"]  # the goal is set where it measured
    verdict = ("| yes |" if top["of_ideal"] >= 0.8 else "| **no** |") if paper else "|  |"
    assert row.endswith(verdict)
    assert "[lookup](lookup.md)" in text and "accuracy" not in text  # only what ran

    for of_ideal in (0.5, 0.95):
        for p in figures["points"]:
            p["of_ideal"] = of_ideal
        rows = [r for r in summary.speedup(figures) if r[0].startswith("Unlearning")]
        assert rows and all(f"{of_ideal:.2f} of ideal" in r[2] for r in rows)
        for r in rows:
            judged = "purchase" in r[0]
            assert r[3] is ((of_ideal >= figures["goal_of_ideal"]) if judged else None)


def test_update_rewrites_only_the_generated_block(quick: Path, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    shutil.copytree(quick, folder)
    prose = "# Results\n\nHand-written reading.\n"
    stale = f"{prose}\n{summary.BEGIN}\n| stale |\n{summary.END}\n\nMore prose.\n"
    (folder / "README.md").write_text(stale)
    assert main(["summary", "--out", str(folder)]) == 0
    new = (folder / "README.md").read_text()
    assert new.startswith(prose) and new.endswith(f"{summary.END}\n\nMore prose.\n")
    assert block(new) == summary.table(folder) and "stale" not in new
    assert summary.update_readme(folder) == new  # regenerating changes nothing


def test_a_readme_without_markers_is_refused_unchanged(quick: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    shutil.copy(quick / "lookup.json", tmp_path / "lookup.json")
    with pytest.raises(ValueError, match="headline markers"):
        summary.update_readme(tmp_path)
    assert readme.read_text() == "no markers here\n"


def test_a_run_refreshes_the_headline_of_a_readme_beside_its_results(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text(f"# Results\n{summary.BEGIN}\n{summary.END}\n")
    run("quick", tmp_path, ["lookup"])
    text = block((tmp_path / "README.md").read_text())
    assert "[lookup](lookup.md)" in text and "| lookup | ID lookup up to N =" in text
