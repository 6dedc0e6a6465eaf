"""The deletion benchmark's quick suite, run once through the harness: the envelope, the
tables, and figures that agree with each other and with the cost model. No timing is
asserted; only that every figure is there and consistent."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness import run
from sisa.deletion.cost import paper_batched_points


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench")
    [result] = run("quick", out, ["deletion"], command="python -m benchmarks run --suite quick")
    return out, result


@pytest.fixture(scope="module")
def figures(result: tuple[Path, dict[str, Any]]) -> dict[str, Any]:
    return result[1]["figures"]


def test_the_envelope_and_the_tables_are_written(result: tuple[Path, dict[str, Any]]) -> None:
    out, envelope = result
    written = json.loads((out / "deletion.json").read_text())
    assert written == json.loads(json.dumps(envelope, default=str))
    assert written["benchmark"] == "deletion" and written["suite"] == "quick"
    assert len(written["commit"].split()[0]) == 40
    assert {"cpu", "cores", "torch", "device"} <= set(written["machine"])
    config = written["config"]
    assert config["ks"] == [1, 10] and config["purchase"]["data.n"] == 4000
    markdown = (out / "deletion.md").read_text()
    assert written["commit"] in markdown
    for heading in (
        "## Time to compliance",
        "## Batched deletions",
        "### Against the cost model (goal: measured ≤ 1.1 x predicted)",
        "### Where the compute goes",
        "### One at a time",
        "## Acceptance under a backlog",
        "## Reading",
    ):
        assert heading in markdown
    assert "| purchase | " in markdown and "| digits | " in markdown
    assert "| training (the plan's calibration) |" in markdown
    assert "| K = 10 (median) |" in markdown
    for line in written["figures"]["reading"]:
        assert line in markdown


def test_compliance_adds_up_and_keeps_every_repeat(figures: dict[str, Any]) -> None:
    assert set(figures["compliance"]) == {"purchase", "digits"}
    for c in figures["compliance"].values():
        assert c["repeats"] == len(c["runs"]) == 5
        for r in c["runs"]:
            assert r["end_to_end_s"] == pytest.approx(
                r["compliance_s"] + r["reload_s"] + r["predict_s"]
            )
        ends = [r["end_to_end_s"] for r in c["runs"]]
        assert c["end_to_end_s"] == pytest.approx(statistics.median(ends))
        assert c["max_end_to_end_s"] == max(ends)
        assert 0 <= c["dropped"] <= c["repeats"]


def test_the_calibration_is_the_stores_training(figures: dict[str, Any]) -> None:
    cal = figures["calibration"]
    assert cal["shards"] == cal["jobs"] == 5 and cal["stages"] == 5 * 10
    assert cal["seconds_per_sample"] == pytest.approx(cal["phases_s"]["train"] / cal["samples"])
    assert cal["seconds_per_stage"] == pytest.approx(cal["phases_s"]["checkpoint"] / cal["stages"])
    # the three unit costs reproduce the training they were measured on
    predicted = (
        cal["seconds_per_sample"] * cal["samples"]
        + cal["seconds_per_stage"] * cal["stages"]
        + cal["seconds_per_job"] * cal["jobs"]
    )
    assert predicted == pytest.approx(cal["compute_s"])
    assert sum(cal["phases_s"].values()) <= cal["compute_s"]
    assert cal["not_training_share"] == pytest.approx(
        1 - cal["phases_s"]["train"] / cal["compute_s"]
    )


def test_each_batch_is_measured_against_the_plan_and_the_paper(figures: dict[str, Any]) -> None:
    cal, runs = figures["calibration"], figures["batched_runs"]
    assert [r["k"] for r in runs] == [1, 1, 1, 10, 10]
    for r in runs:
        assert r["calibrated_from"] == "training"
        assert r["planned_samples"] == r["trained_samples"] > 0
        assert r["predicted_s"] == pytest.approx(
            r["planned_samples"] * cal["seconds_per_sample"]
            + r["stages"] * cal["seconds_per_stage"]
            + r["jobs"] * cal["seconds_per_job"]
        )
        paper = paper_batched_points(cal["points"], cal["shards"], r["k"])
        assert r["paper_touched_points"] == pytest.approx(paper)
        assert r["points_ratio"] == pytest.approx(r["touched_points"] / paper)
        assert r["compute_ratio"] == pytest.approx(r["compute_s"] / r["predicted_s"])
        assert r["wall_ratio"] == pytest.approx(r["wall_s"] / r["predicted_s"])
        assert r["optimizer_gap"] + r["fixed_gap"] == pytest.approx(r["compute_ratio"] - 1)
        assert r["deletions_per_s"] == pytest.approx(r["k"] / r["wall_s"])
        assert 1 <= r["shards_retrained"] == r["jobs"] <= min(r["k"], cal["shards"])
        assert r["touched_points"] <= cal["points"] and r["wall_s"] >= r["compute_s"]
        assert len(r["accept_each_s"]) == len(r["compliance_each_s"]) == r["k"]
    one = [r for r in runs if r["k"] == 1]
    assert all(r["shards_retrained"] == 1 for r in one)  # one shard: its points, all of them


def test_the_summary_is_the_median_of_the_repeats(figures: dict[str, Any]) -> None:
    runs = figures["batched_runs"]
    assert [b["k"] for b in figures["batched"]] == [1, 10]
    for b in figures["batched"]:
        mine = [r for r in runs if r["k"] == b["k"]]
        assert b["repeats"] == len(mine)
        for key in ("compute_ratio", "points_ratio", "wall_s", "deletions_per_s"):
            assert b[key] == pytest.approx(statistics.median(r[key] for r in mine))


def test_one_at_a_time_and_the_backlog(figures: dict[str, Any]) -> None:
    seq = figures["sequential"]
    assert [s["k"] for s in seq] == [1, 10]
    assert seq[0]["samples"] == seq[0]["batched_samples"]  # K = 1: the same work
    for s in seq:
        assert s["samples"] >= s["batched_samples"]
    assert sum(b["accepts"] for b in figures["backlog"]) == 10
