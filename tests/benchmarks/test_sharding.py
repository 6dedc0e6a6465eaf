"""The sharding benchmark's quick suite, run once through the harness: the envelope, the
tables, and figures consistent with each other and with the cost model. No timing is
asserted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness import run
from benchmarks.sharding import RISKY_MASS, RISKY_SHARE, SIZES, VARIANTS


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench")
    [result] = run("quick", out, ["sharding"], command="python -m benchmarks run --suite quick")
    return out, result


@pytest.fixture(scope="module")
def figures(result: tuple[Path, dict[str, Any]]) -> dict[str, Any]:
    return result[1]["figures"]


def test_the_envelope_tables_and_plot_are_written(result: tuple[Path, dict[str, Any]]) -> None:
    out, envelope = result
    written = json.loads((out / "sharding.json").read_text())
    assert written == json.loads(json.dumps(envelope, default=str))
    assert written["benchmark"] == "sharding" and written["suite"] == "quick"
    assert written["config"]["n"] == SIZES["quick"].n
    markdown = (out / "sharding.md").read_text()
    for heading in ("## Layout and accuracy", "## Cost of K requests", "## Saving against"):
        assert heading in markdown
    for line in written["figures"]["reading"]:
        assert line in markdown
    assert (out / "sharding-savings.png").stat().st_size > 0


def test_the_request_distribution_is_skewed_as_configured(figures: dict[str, Any]) -> None:
    d = figures["distribution"]
    assert d["risky_share"] == pytest.approx(RISKY_SHARE, abs=0.02)
    assert d["risky_mass"] == pytest.approx(RISKY_MASS, abs=0.05)


def test_layouts_hold_every_training_point(figures: dict[str, Any]) -> None:
    n = figures["distribution"]["n_train"]
    assert set(figures["variants"]) == set(VARIANTS)
    for name, v in figures["variants"].items():
        assert sum(v["shard_sizes"]) == n
        assert v["reserved_shards"] == (0 if name == "uniform" else 1)
        for key in ("average", "vote", "shard_0", "other_shards"):
            assert 0 <= v["accuracy"][key]["mean"] <= 1


def test_measured_samples_are_what_the_plan_said(figures: dict[str, Any]) -> None:
    sizes = SIZES["quick"]
    assert {(c["k"], c["variant"]) for c in figures["costs"]} == {
        (k, v) for k in sizes.draws for v in VARIANTS
    }
    for c in figures["costs"]:
        assert len(c["runs"]) == c["draws"] == sizes.draws[c["k"]]
        for r in c["runs"]:
            assert r["samples"] == r["planned_samples"] > 0  # exact, draw by draw
            assert 1 <= r["victims"] <= c["k"] and r["shards"] == len(r["start_stages"])
            if c["variant"] != "uniform" and r["risky_victims"] == r["victims"]:
                assert set(r["start_stages"]) == {0}  # risky points live in shard 0 only
        assert c["measured_samples"] == pytest.approx(
            sum(r["samples"] for r in c["runs"]) / len(c["runs"])
        )
        assert c["measured_samples_se"] >= 0 or len(c["runs"]) == 1
        # the simulated draws count plans as the run does: their mean is the expectation
        assert c["simulated_samples"] == pytest.approx(c["expected"]["samples"], rel=0.2)
        assert c["samples_over_expected"] == pytest.approx(
            c["measured_samples"] / c["expected"]["samples"]
        )


def test_deletion_aware_sharding_saves_in_expectation(figures: dict[str, Any]) -> None:
    costs = {(c["k"], c["variant"]): c for c in figures["costs"]}
    assert figures["savings"]
    for s in figures["savings"]:
        uniform, aware = costs[(s["k"], "uniform")], costs[(s["k"], s["variant"])]
        assert s["expected_samples"] == pytest.approx(
            uniform["expected"]["samples"] / aware["expected"]["samples"]
        )
        assert s["measured_samples"] == pytest.approx(
            uniform["measured_samples"] / aware["measured_samples"]
        )
        assert s["expected_samples"] > 1 and s["expected_points"] > 1
    for k in SIZES["quick"].draws:  # late slices only add to the saving of fewer shards
        late, every = costs[(k, "aware")], costs[(k, "aware, all slices")]
        assert late["expected"]["samples"] <= every["expected"]["samples"]
        assert late["expected"]["touched_points"] == pytest.approx(
            every["expected"]["touched_points"]
        )
