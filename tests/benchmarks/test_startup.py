"""The start-up benchmark's quick suite, end to end: real ``sisa`` subprocesses on a small
Purchase store. Structure and consistency only, never a timing."""

from __future__ import annotations

import json

import pytest

from benchmarks import startup
from benchmarks.harness import run
from benchmarks.summary import startup as headline


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    [result] = run("quick", out, ["startup"])
    return out, result


def test_every_command_is_timed_over_the_repeats(quick):
    out, result = quick
    f, size = result["figures"], startup.SIZES["quick"]
    assert json.loads((out / "startup.json").read_text()) == json.loads(json.dumps(result))
    assert result["config"]["repeats"] == size["repeats"] and result["config"]["n"] == size["n"]
    timed = [*f["imports"].values(), f["status"], f["forget"]]
    assert set(f["imports"]) == {*startup.IMPORTS, "use_deterministic_algorithms"}
    for figure in timed:
        assert len(figure["runs"]) == size["repeats"] and all(s > 0 for s in figure["runs"])
        assert min(figure["runs"]) <= figure["median_s"] <= max(figure["runs"])
    assert f["train_s"] > 0 and f["others_cores"] >= 0 and "->" in f["load_average"]


def test_each_forget_wait_retrains_one_shard_and_is_compared_with_that_retrain(quick):
    f = quick[1]["figures"]
    wait, size = f["forget_wait"], startup.SIZES["quick"]
    runs = wait["runs"]
    assert len(runs) == size["repeats"] and len({r["shard"] for r in runs}) == len(runs)
    for r in runs:
        assert r["stages"] == list(range(r["slice"], size["slices"] + 1))
        assert 0 < r["train_s"] <= r["retrain_s"] <= r["batch_s"] < r["wall_s"]
        assert r["overhead_s"] == pytest.approx(r["wall_s"] - r["retrain_s"])
    assert wait["max_overhead_s"] == max(r["overhead_s"] for r in runs)
    g = f["goals"]
    assert g["overhead_budget_s"] == pytest.approx(
        f["imports"]["torch"]["median_s"] + startup.SLACK_S
    )
    assert g["forget_wait_met"] == (wait["median_overhead_s"] <= g["overhead_budget_s"])
    assert g["status_met"] == (f["status"]["median_s"] < startup.GOAL_S)


def test_the_tables_and_the_headline_read_the_figures(quick):
    out, result = quick
    f, markdown = result["figures"], (out / "startup.md").read_text()
    assert f"| `sisa status` | {f['status']['median_s']:.2f} |" in markdown
    table_lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len(table_lines) == (2 + 5) + (2 + 2) + (2 + len(f["forget_wait"]["runs"]))
    assert "shared with other work" in markdown
    rows = headline(f)
    assert len(rows) == 2 and rows[0][3] == (f["goals"]["status_met"] and f["goals"]["forget_met"])
    assert f"{f['forget_wait']['median_overhead_s']:.2f} s median" in rows[1][2]
