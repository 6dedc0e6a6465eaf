"""The backbones benchmark's quick suite, end to end (a few seconds): its figures are the
quotients and counts they claim to be, the public part is disjoint from the stores' data,
and the headline reads them. No timing is asserted."""

from __future__ import annotations

import copy
import json
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import backbones, summary
from benchmarks.backbones_model import WIDTHS, public_mask
from benchmarks.backbones_report import verdicts
from benchmarks.harness import run

GRID = backbones.GRIDS["quick"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench")
    [result] = run("quick", out, ["backbones"])
    return out, result


def test_the_files_and_the_tables(quick: tuple[Path, dict[str, Any]]) -> None:
    out, result = quick
    assert json.loads((out / "backbones.json").read_text()) == json.loads(json.dumps(result))
    assert result["benchmark"] == "backbones" and result["suite"] == "quick"
    markdown = (out / "backbones.md").read_text()
    for heading in ("| variant | S |", "| deletion of one point |", "| rows N |", "| what |"):
        assert heading in markdown
    assert "disjoint public part" in markdown and "## Reading" in markdown
    assert 'model.finetune = "lora"' in markdown and "frozen prefix" in markdown
    assert "ViT-B-sized backbone" in markdown and "times serving only" in markdown


def test_the_public_part_is_disjoint_and_the_backbone_its_own(quick) -> None:
    setup = quick[1]["figures"]["setup"]
    n = GRID["data"]["n"]
    assert setup["disjoint"] and setup["public_points"] + setup["private_points"] == n
    widths, bb = WIDTHS["quick"], setup["backbone"]
    dims = [600, *widths]
    assert bb["params"] == sum(a * b + b for a, b in zip(dims, dims[1:], strict=False))
    assert bb["tensor_bytes"] == 4 * bb["params"] < bb["bytes"]  # float32, plus a header
    assert bb["points"] == setup["public_points"] and bb["features"] == widths[-1]


def test_every_cell_and_its_paired_loss(quick) -> None:
    figures = quick[1]["figures"]
    runs, cells = figures["accuracy_runs"], {(s["variant"], s["shards"]): s for s in
                                             figures["accuracy"]}  # fmt: skip
    assert set(cells) == {(v, s) for v in GRID["variants"] for s in GRID["shards"]}
    assert len(runs) == len(cells) * len(GRID["seeds"])
    for (variant, shards), s in cells.items():
        mine = [r for r in runs if (r["variant"], r["shards"]) == (variant, shards)]
        mono = {r["seed"]: r["average"] for r in runs if (r["variant"], r["shards"]) ==
                (variant, 1)}  # fmt: skip
        losses = [(mono[r["seed"]] - r["average"]) * 100 for r in mine]
        assert s["seeds"] == len(mine) == len(GRID["seeds"])
        assert s["mean"] == pytest.approx(statistics.mean(r["average"] for r in mine))
        assert s["se"] == pytest.approx(statistics.stdev(r["average"] for r in mine) /
                                        math.sqrt(len(mine)))  # fmt: skip
        assert s["loss_points"] == pytest.approx(statistics.mean(losses))
        assert s["loss_se"] == pytest.approx(statistics.stdev(losses) / math.sqrt(len(mine)))
        assert 0 <= s["mean"] <= 1
    for variant in GRID["variants"]:
        assert cells[(variant, 1)]["loss_points"] == 0 == cells[(variant, 1)]["loss_se"]


def test_deletion_times_are_the_quotients_they_claim(quick) -> None:
    d, spec = quick[1]["figures"]["deletion"], GRID["deletion"]
    m, f = d["mono_head"], d["full_fine_tune"]
    assert len(m["deletions"]) == spec["mono_k"]
    for mode in ("head", "lora"):
        h = d[mode]
        assert len(h["deletions"]) == spec["k"]
        assert (h["sisa.shards"], h["sisa.slices"]) == tuple(spec["sisa"].values())
        assert h["median_s"] == pytest.approx(
            statistics.median(r["wall_s"] for r in h["deletions"])
        )
        assert d["full_over"][mode] == pytest.approx(f["retrain_s"] / h["median_s"])
        assert d["mono_head_over"][mode] == pytest.approx(m["median_s"] / h["median_s"])
        # one shard retrained per deletion
        assert all(len(r["shards"]) == 1 and r["samples"] > 0 for r in h["deletions"])
        assert 0 <= h["accuracy"] <= 1
    assert d["full_over_mono_head"] == pytest.approx(f["retrain_s"] / m["median_s"])
    left = m["points"] - 1  # the monolithic head retrains all it has left
    assert m["deletions"][0]["samples"] == left * round(GRID["epochs"])
    assert f["points"] == left and f["samples"] == left * round(GRID["epochs"])


def test_inference_is_the_ensemble_over_one_model(quick) -> None:
    served = quick[1]["figures"]["inference"]
    assert set(served) == {"head", "lora", "vit"}
    vit = GRID["vit"]
    for name, inf in served.items():
        sizes = vit["sizes"] if name == "vit" else GRID["inference"]["sizes"]
        assert [r["n"] for r in inf["rows"]] == sizes
        shards = vit["shards"] if name == "vit" else GRID["deletion"]["sisa"]["sisa.shards"]
        assert inf["shards"] == shards
        batch = vit["feature_batch"] if name == "vit" else GRID["feature_batch"]
        assert inf["feature_batch"] == batch
        parts = ("ensemble_s", "one_model_s", "backbone_groups_s", "heads_s", "one_backbone_s")
        for r in inf["rows"]:
            assert r["ratio"] == pytest.approx(r["ensemble_s"] / r["one_model_s"])
            assert all(r[key] > 0 for key in parts)


def test_checkpoint_bytes_against_the_backbone_and_a_full_fine_tune(quick) -> None:
    b = quick[1]["figures"]["bytes"]
    f, bb = b["full_fine_tune"], b["backbone_bytes"]
    slices = GRID["deletion"]["sisa"]["sisa.slices"]
    widths, rank = WIDTHS["quick"], backbones.LORA["model.lora_rank"]
    head_weights = (widths[-1] + 1) * 100 * 4  # a linear head to 100 classes, float32
    adapters = rank * (widths[-2] + widths[-1]) * 4  # A [r, in] and B [out, r] of the target
    expected = {"head": head_weights, "lora": head_weights + adapters}
    assert f["weights_per_stage"] > bb  # the backbone's layers and the head
    for mode in ("head", "lora"):
        h = b[mode]
        assert h["stages"] == f["stages"] == slices
        assert expected[mode] < h["weights_per_stage"] < expected[mode] + 1024  # and the header
        assert h["weights_of_backbone"] == pytest.approx(h["weights_per_stage"] / bb)
        assert h["with_state_of_backbone"] == pytest.approx(h["with_state_per_stage"] / bb)
        assert h["shard_total_of_full"] == pytest.approx(h["shard_total"] / f["shard_total"])
    for s in (b["head"], b["lora"], f):
        assert s["shard_total"] == sum(p["weights"] + p["state"] for p in s["per_stage"])
        state = s["with_state_per_stage"] - s["weights_per_stage"]
        assert state > 2 * (s["weights_per_stage"] - 1024)  # Adam: two moments per weight


def test_the_verdicts_and_the_headline_read_the_figures(quick) -> None:
    out, result = quick
    figures = copy.deepcopy(result["figures"])
    assert figures["verdicts"] == verdicts(figures)
    assert figures["verdicts"]["loss_at_20_head"] is None  # the quick grid has no S = 20
    assert figures["verdicts"]["loss_at_100_lora"] is None
    rows = [line for line in summary.table(out).splitlines() if line.startswith("| backbones |")]
    assert len(rows) == 5  # deletion, 2 inference, 2 bytes: no accuracy row without S = 20
    v = figures["verdicts"]
    for row, met in zip(rows[-2:], ("head", "lora"), strict=True):
        ok = v[f"weights_{met}"] and v[f"with_state_{met}"]
        assert row.endswith("| yes |" if ok else "| **no** |")
    for mode in ("head", "lora"):
        for shards in ("20", "100"):  # a grid with those S gets a row each
            figures["accuracy"].append(
                {"variant": mode, "shards": int(shards), "seeds": 3, "mean": 0.99,
                 "loss_points": 0.4 if shards == "20" else 1.6, "loss_se": 0.1}
            )  # fmt: skip
    judged = [r for r in summary.backbones(figures) if r[0].startswith("Accuracy")]
    assert [r[3] for r in judged] == [True, False, True, False]  # 1.6 > 1.5 at S = 100
    assert ['"lora"' in r[0] for r in judged] == [False, False, True, True]


def test_the_public_split_is_keyed_and_stable() -> None:
    ids = np.arange(20_000)
    mask = public_mask(ids, 0.3)
    assert np.array_equal(mask, public_mask(ids, 0.3))
    assert np.array_equal(mask[5_000:], public_mask(ids[5_000:], 0.3))  # per ID alone
    assert 0.28 < mask.mean() < 0.32
    assert not (public_mask(ids, 0.2) & ~mask).any()  # a smaller share is a subset
