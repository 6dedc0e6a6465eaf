"""The benchmark harness runs its quick suite end to end and writes what it promises:
JSON with the envelope (command, commit, machine, config) and Markdown tables. No timing
is asserted; only that every figure is there and consistent."""

from __future__ import annotations

import json
import math
import random
import statistics

import numpy as np
import pytest

from benchmarks import speedup
from benchmarks.datasets import DataCache
from benchmarks.harness import main, run
from benchmarks.stores import training_layout
from orchestrator.executors import InProcessExecutor
from sisa.config import build_config
from sisa.data.loaders import load_source
from sisa.deletion.cost import paper_speedup
from sisa.training.train import train


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    argv = ["run", "--suite", "quick", "--only", "speedup", "--only", "accuracy"]
    assert main([*argv, "--out", str(out)]) == 0
    return out


def test_quick_suite_writes_the_envelope_and_tables(quick):
    result = json.loads((quick / "speedup.json").read_text())
    assert result["suite"] == "quick" and result["benchmark"] == "speedup"
    assert result["command"].startswith("python -m benchmarks run --suite quick --only speedup")
    assert len(result["commit"].split()[0]) == 40
    assert {"cpu", "cores", "torch", "device"} <= set(result["machine"])
    assert result["config"]["shards"] == [1, 5] and result["config"]["repeats"] == 2
    markdown = (quick / "speedup.md").read_text()
    assert "| digits | 5 | 5 |" in markdown and result["commit"] in markdown


def test_speedup_points_carry_the_cost_model_and_the_time_split(quick):
    points = json.loads((quick / "speedup.json").read_text())["figures"]["points"]
    assert [(p["shards"], p["slices"]) for p in points] == [(1, 1), (1, 5), (5, 1), (5, 5)]
    mono = points[0]
    for p in points:
        assert p["ideal"] == pytest.approx(paper_speedup(p["shards"], p["slices"]))
        assert p["deletion_s"] == pytest.approx(statistics.mean(r["seconds"] for r in p["runs"]))
        assert p["monolithic_s"] == pytest.approx(
            statistics.median(r["seconds"] for r in mono["runs"])
        )
        assert p["speedup"] == pytest.approx(p["monolithic_s"] / p["deletion_s"])
        assert p["of_ideal"] == pytest.approx(p["speedup"] / p["ideal"])
        samples = statistics.mean(r["samples"] for r in p["runs"])
        assert p["drawn_ideal"] == pytest.approx(p["monolithic_samples"] / samples)
        assert p["of_drawn_ideal"] == pytest.approx(p["speedup"] / p["drawn_ideal"])
        assert len(p["runs"]) == p["draws"] == 2 and p["phases_s"]["train"] > 0
        assert all(r["samples"] > 0 for r in p["runs"]) and math.isfinite(p["rest_s"])
    # a monolithic deletion retrains everything; sharding and slicing retrain less
    assert mono["drawn_ideal"] == pytest.approx(1.0, rel=0.01)
    assert all(p["deletion_samples"] < mono["deletion_samples"] for p in points[1:])
    assert (quick / "speedup-grid.png").read_bytes().startswith(b"\x89PNG")
    top = points[-1]
    reading = f"a {top['speedup']:.1f}x speedup; the cost model's ideal is {top['ideal']:.1f}x"
    assert reading in (quick / "speedup.md").read_text()


def test_deletions_are_drawn_one_per_stratum_of_slices(tmp_path):
    url = str(tmp_path / "store")
    overrides = {"data.source": "digits", "sisa.shards": 2, "sisa.slices": 4, "sisa.epochs": 1}
    train(build_config({}, overrides), url, executor=InProcessExecutor(progress=False))
    layout = training_layout(url)
    ids, slices = layout.ids.tolist(), layout.slice.tolist()
    slice_of = dict(zip(ids, slices, strict=True))
    picked = speedup.victims(url, 4, random.Random(0))
    assert sorted(slice_of[v] for v in picked) == [0, 1, 2, 3]
    picked = speedup.victims(url, 2, random.Random(0))
    assert [slice_of[v] // 2 for v in picked] == [0, 1]  # strata {0, 1} and {2, 3}
    assert len(set(speedup.victims(url, 6, random.Random(0)))) == 6  # never the same ID twice


def test_accuracy_summarises_seeds_against_the_monolithic_model_and_plots(quick):
    result = json.loads((quick / "accuracy.json").read_text())
    runs, summary = result["figures"]["runs"], result["figures"]["summary"]
    assert len(runs) == 3 * 2 * 2  # S in {1, 2, 5}, two shardings, two seeds
    assert len(summary) == 3 * 2 * 2  # S, sharding, aggregation
    mono = statistics.mean(r["average"] for r in runs if r["shards"] == 1)
    for s in summary:
        values = [
            r[s["aggregation"]]
            for r in runs
            if (r["shards"], r["sharding"]) == (s["shards"], s["sharding"])
        ]
        assert s["mean"] == pytest.approx(statistics.mean(values)) and s["seeds"] == 2
        assert s["loss_points"] == pytest.approx((mono - s["mean"]) * 100)
    png = (quick / "accuracy-shards.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert "](accuracy-shards.png)" in (quick / "accuracy.md").read_text()


def test_unknown_suites_and_benchmarks_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown suite"):
        run("huge", tmp_path)
    with pytest.raises(ValueError, match="unknown benchmark"):
        run("quick", tmp_path, ["nope"])
    assert not list(tmp_path.iterdir())


def test_generated_data_is_written_once_and_equals_the_source(tmp_path):
    cache = DataCache(tmp_path)
    dataset = {"data.source": "synthetic-purchase", "data.n": 300, "sisa.shards": 3}
    first = cache.overrides(dataset, seed=4)
    assert cache.overrides(dataset, seed=4) == first and len(list(tmp_path.iterdir())) == 1
    assert first["sisa.shards"] == 3 and first["sisa.seed"] == 4 and "data.n" not in first
    cfg = build_config({}, first)
    loaded = load_source(cfg.data.source, 0, 4, cfg.data.num_classes)
    made = load_source("synthetic-purchase", 300, 4)
    for name in ("ids", "X", "y"):
        assert np.array_equal(getattr(loaded, name), getattr(made, name))
    assert loaded.num_classes == made.num_classes == 100
    assert cache.overrides({"data.source": "digits"}) == {"data.source": "digits"}


def test_lookup_reports_each_size_against_the_smallest(tmp_path):
    run("quick", tmp_path, ["lookup"])
    rows = json.loads((tmp_path / "lookup.json").read_text())["figures"]["rows"]
    assert [(r["kind"], r["n"]) for r in rows] == [
        ("int", 10_000),
        ("int", 100_000),
        ("str", 10_000),
    ]
    assert rows[0]["vs_smallest"] == rows[2]["vs_smallest"] == 1.0
    assert rows[1]["vs_smallest"] == pytest.approx(rows[1]["lookup_s"] / rows[0]["lookup_s"])
    assert "| 100,000 | int |" in (tmp_path / "lookup.md").read_text()
