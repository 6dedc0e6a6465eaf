"""The training-cost benchmark's quick suite, end to end, beside the session's own Ray
cluster (its child processes start their own Ray and must not join or stop that one).
Only structure and consistency are asserted, never a timing."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from benchmarks import training
from benchmarks.harness import run

PHYSICAL_MB = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / training.MB


@pytest.fixture(scope="module")
def quick(tmp_path_factory, ray_cluster):
    out = tmp_path_factory.mktemp("bench")
    [result] = run("quick", out, ["training"])
    assert ray_cluster.is_initialized()
    assert ray_cluster.get(ray_cluster.remote(lambda: 41).remote()) == 41  # still ours, alive
    return out, result


def test_the_envelope_config_and_files(quick):
    out, result = quick
    assert json.loads((out / "training.json").read_text()) == json.loads(json.dumps(result))
    assert result["benchmark"] == "training" and result["suite"] == "quick"
    config = result["config"]
    assert (config["shards"], config["slices"]) == (training.SHARDS, training.SLICES)
    assert config["n"] == training.GRIDS["quick"]["n"] and config["mono_threads"] == [1, 2]
    png = (out / "training-scaling.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    markdown = (out / "training.md").read_text()
    assert "](training-scaling.png)" in markdown and "| N | samples SISA |" in markdown
    for n in config["n"]:
        assert f"| {n:,} |" in markdown


def test_ratios_are_the_quotients_of_the_walls(quick):
    figures = quick[1]["figures"]
    points = figures["points"]
    assert [p["n"] for p in points] == training.GRIDS["quick"]["n"]
    for p in points:
        mono = p["mono"]
        assert set(mono) == {"1", "2"}
        assert p["mono_wall_s"] == min(m["wall_s"] for m in mono.values())
        assert p["mono_wall_s"] == mono[str(p["mono_threads"])]["wall_s"]
        assert p["ratio"] == pytest.approx(p["sisa"]["wall_s"] / p["mono_wall_s"])
        for t, m in mono.items():
            assert p["ratio_by_threads"][t] == pytest.approx(p["sisa"]["wall_s"] / m["wall_s"])
        assert p["goal_met"] == (p["ratio"] <= training.GOAL)
        for m in [p["sisa"], *mono.values()]:
            assert len(m["runs"]) == p["repeats"]
            assert m["wall_s"] > 0 and m["jobs_s"] > 0 and m["phases_s"]["train"] > 0
    ns = [p["n"] for p in points]
    expected = np.polyfit(np.log(ns), np.log([p["sisa"]["wall_s"] for p in points]), 1)[0]
    assert figures["slope_sisa"] == pytest.approx(expected)


def test_both_sides_train_the_same_sample_epochs(quick):
    epochs = quick[1]["config"]["epochs"]
    for p in quick[1]["figures"]["points"]:
        sisa, mono = p["sisa"], p["mono"]["1"]
        assert sisa["n_train"] == mono["n_train"] == p["n_train"] > 0.5 * p["n"]
        assert mono["samples"] == math.ceil(epochs * p["n_train"])  # one stage, e epochs
        assert p["mono"]["2"]["samples"] == mono["samples"]
        # the equal-cost schedule: e·n in expectation; slices are uneven, stages round up
        assert sisa["samples"] == pytest.approx(mono["samples"], rel=0.1)
        assert p["samples_ratio"] == pytest.approx(sisa["samples"] / mono["samples"])


def test_peaks_are_plausible_megabytes(quick):
    for p in quick[1]["figures"]["points"]:
        for m in [p["sisa"], *p["mono"].values()]:
            assert 10 < m["driver_peak_mb"] < PHYSICAL_MB
            assert 10 < m["task_peak_mb"] < PHYSICAL_MB
        assert p["sisa"]["new_workers"] is None or p["sisa"]["new_workers"] >= 0
