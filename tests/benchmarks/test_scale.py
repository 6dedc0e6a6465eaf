"""The N = 1M benchmark's quick suite (N = 20k), end to end in its own child process
beside the session's Ray cluster. Structure and consistency only, never a timing."""

from __future__ import annotations

import json

import pytest

from benchmarks import scale
from benchmarks.harness import run
from benchmarks.summary import scale as headline


@pytest.fixture(scope="module")
def quick(tmp_path_factory, ray_cluster):
    out = tmp_path_factory.mktemp("bench")
    [result] = run("quick", out, ["scale"])
    assert ray_cluster.is_initialized()  # the child started its own Ray, not ours
    return out, result


def test_trains_forgets_and_verifies_at_the_quick_size(quick):
    out, result = quick
    f = result["figures"]
    grid = scale.GRIDS["quick"]
    assert json.loads((out / "scale.json").read_text()) == json.loads(json.dumps(result))
    assert f["n_train"] + f["n_test"] == grid["n"] and f["n_test"] > 0
    assert f["verified"] is True
    forgot = f["forgot"]
    if forgot["from_test"]:
        assert forgot["shards"] == [] and forgot["stages_retrained"] == 0
    else:
        assert forgot["shards"] == [f["verified_shard"]]
        assert 1 <= forgot["stages_retrained"] <= grid["slices"]


def test_memory_figures_are_consistent(quick):
    f = quick[1]["figures"]
    assert 0 < f["rss_imports_mb"] <= f["rss_ray_mb"] <= f["driver_peak_mb"]
    assert f["peak_after_train_mb"] <= f["driver_peak_mb"]
    assert f["goal_met"] == (f["driver_peak_mb"] <= scale.GOAL_MB)
    assert f["task_peak_mb"] > 0


def test_markdown_and_headline_read_the_figures(quick):
    out, result = quick
    f = result["figures"]
    markdown = (out / "scale.md").read_text()
    assert f"{f['driver_peak_mb']:.0f} MB" in markdown and "bitwise identical" in markdown
    [(claim, goal, measured, met)] = headline(f)
    assert goal == f"≤ {scale.GOAL_MB} MB" and f"{f['driver_peak_mb']:.0f} MB" in measured
    assert met == (f["goal_met"] and f["verified"])
