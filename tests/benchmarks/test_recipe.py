"""The recipe benchmark's quick suite, end to end (a few seconds): its figures are the
quotients and counts they claim to be, and the headline reads them. No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import recipe, summary
from benchmarks.harness import run
from benchmarks.recipe_images import RECIPES, StageTimer
from benchmarks.recipe_scaling import VARIANTS, globally_scaled


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench")
    [result] = run("quick", out, ["recipe"])
    return out, result


def test_the_files_and_the_tables(quick: tuple[Path, dict[str, Any]]) -> None:
    out, result = quick
    assert json.loads((out / "recipe.json").read_text()) == json.loads(json.dumps(result))
    assert result["benchmark"] == "recipe" and result["suite"] == "quick"
    markdown = (out / "recipe.md").read_text()
    for heading in ("| recipe | S | R |", "| source | images |", "| deletions |", "| S | R |"):
        assert heading in markdown
    assert "## Reading" in markdown and "no scaling" in markdown


def test_every_cell_and_its_loss_against_the_monolithic_model(quick) -> None:
    figures, grid = quick[1]["figures"], recipe.GRIDS["quick"]["images"]
    cells = {(s["recipe"], s["shards"], s["slices"]): s for s in figures["recipes"]}
    assert set(cells) == {(r, s, k) for r in RECIPES for s, k in grid["configs"]}
    assert len(figures["recipe_runs"]) == len(cells) * len(grid["seeds"])
    for (name, _, _), s in cells.items():
        mono = cells[(name, 1, 1)]["mean"]
        assert s["loss_points"] == pytest.approx((mono - s["mean"]) * 100)
        assert 0 <= s["mean"] <= 1 and s["seeds"] == len(grid["seeds"])
    assert figures["goal_shards"] == max(s for s, _ in grid["configs"])
    assert figures["image_setup"]["device"] in ("cpu", "cuda")


def test_ingest_counts_images_and_bytes(quick) -> None:
    ing = quick[1]["figures"]["ingest"]
    png, npz = ing["sources"]["image folder (PNG)"], ing["sources"]["npz (float32)"]
    assert png["images"] == npz["images"] == ing["written"] > 0
    side = recipe.GRIDS["quick"]["ingest"]["size"]
    assert ing["pixel_bytes"] == {"uint8": side * side, "float32": 4 * side * side}
    # npz headers are the only overhead: about the pixels' bytes, and 4x for float32
    assert side * side <= png["features_bytes_per_image"] < side * side + 8
    assert 3.9 < ing["stored_ratio"] <= 4.0
    for s in (png, npz):
        assert 0 < s["ingest_s"] <= s["train_call_s"]
        assert s["images_per_s"] == pytest.approx(s["images"] / s["ingest_s"])


def test_scaling_retrains_the_same_samples(quick) -> None:
    cost = quick[1]["figures"]["scaling_cost"]
    assert cost["samples_equal"] and len(cost["deletions"]) == cost["k"]
    seq = cost["sequential"]
    assert seq["none"]["samples"] == seq["standard"]["samples"] > 0
    assert cost["sequential_ratio"] == pytest.approx(
        seq["standard"]["wall_s"] / seq["none"]["wall_s"]
    )
    assert {r["first"] for r in cost["deletions"]} == {"none", "standard"}  # turns


def test_scaling_accuracy_variants(quick) -> None:
    acc = quick[1]["figures"]["scaling_accuracy"]
    cells = {(s["variant"], s["shards"], s["slices"]): s for s in acc["summary"]}
    assert {v for v, _, _ in cells} == set(VARIANTS)
    # one stage that sees every training point: its statistics are the global ones
    assert cells[("per-stage", 1, 1)]["mean"] == pytest.approx(
        cells[("global", 1, 1)]["mean"], abs=0.03
    )
    for _, shards, slices in cells:  # the rescaled features are what scaling is for
        assert (
            cells[("none", shards, slices)]["mean"] < cells[("per-stage", shards, slices)]["mean"]
        )


def test_the_headline_reads_the_json(quick) -> None:
    out = quick[0]
    rows = [line for line in summary.table(out).splitlines() if line.startswith("| recipe |")]
    assert len(rows) == len(RECIPES) + 3
    assert any("equal samples" in r and r.endswith("| yes |") for r in rows)


def test_global_statistics_standardise_the_training_points(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(5, 3, (50, 4)).astype(np.float32)
    X[:, 2] = 7.0  # a constant feature keeps scale 1
    np.savez(tmp_path / "a.npz", ids=np.arange(50), X=X, y=np.zeros(50, int))
    train_ids = np.arange(0, 50, 2)
    with np.load(globally_scaled(tmp_path / "a.npz", train_ids, tmp_path / "b.npz")) as f:
        scaled, ids = f["X"], f["ids"]
    rows = scaled[np.isin(ids, train_ids)]
    assert np.allclose(rows.mean(axis=0), 0, atol=1e-5)
    assert np.allclose(rows[:, [0, 1, 3]].std(axis=0), 1, atol=1e-4)
    assert np.array_equal(scaled[:, 2], np.zeros(50))


def test_the_stage_timer_clocks_each_named_call() -> None:
    timer = StageTimer()
    out = timer.map(lambda job, _progress: job * 2, [1, 2], resources=None, units=0, desc="x")
    assert out == [2, 4] and set(timer.seconds) == {"x"} and timer.seconds["x"] >= 0
