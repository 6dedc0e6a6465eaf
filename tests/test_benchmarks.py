"""The benchmark harness runs its quick suite end to end and writes what it promises:
JSON with the envelope (command, commit, machine, config) and Markdown tables. No timing
is asserted; only that every figure is there and consistent."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from benchmarks.harness import main, run
from sisa.cost import paper_speedup


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert main(["run", "--suite", "quick", "--out", str(out)]) == 0
    return out


def test_quick_suite_writes_the_envelope_and_tables(quick):
    result = json.loads((quick / "speedup.json").read_text())
    assert result["suite"] == "quick" and result["benchmark"] == "speedup"
    assert result["command"].startswith("python -m benchmarks run --suite quick")
    assert len(result["commit"].split()[0]) == 40
    assert {"cpu", "cores", "torch", "device"} <= set(result["machine"])
    assert result["config"]["shards"] == [1, 5] and result["config"]["repeats"] == 2
    markdown = (quick / "speedup.md").read_text()
    assert "| digits | 5 | 5 |" in markdown and result["commit"] in markdown


def test_speedup_points_carry_the_cost_model_and_the_time_split(quick):
    points = json.loads((quick / "speedup.json").read_text())["figures"]["points"]
    assert [(p["shards"], p["slices"]) for p in points] == [(1, 1), (1, 5), (5, 1), (5, 5)]
    for p in points:
        assert p["ideal"] == pytest.approx(paper_speedup(p["shards"], p["slices"]))
        assert p["speedup"] == pytest.approx(p["monolithic_s"] / p["deletion_s"])
        assert p["of_ideal"] == pytest.approx(p["speedup"] / p["ideal"])
        assert len(p["runs"]) == 2 and p["phases_s"]["train"] > 0
        assert math.isfinite(p["rest_s"])


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
