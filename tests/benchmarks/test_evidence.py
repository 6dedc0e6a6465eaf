"""The evidence benchmark's quick suite, end to end: every method × scenario row is there,
SISA equals its own from-scratch reference, and the figures are consistent with their
runs. No timing is asserted."""

from __future__ import annotations

import json
import statistics

import pytest

from benchmarks import evidence
from benchmarks.harness import run
from sisa.evidence.methods import METHODS
from sisa.evidence.scenarios import SCENARIOS


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    [result] = run("quick", out, ["evidence"])
    return out, result


def rows_of(quick, scenario):
    return {r["method"]: r for r in quick[1]["figures"]["rows"] if r["scenario"] == scenario}


def test_every_method_and_scenario_has_a_row_and_a_table(quick):
    out, result = quick
    assert json.loads((out / "evidence.json").read_text()) == json.loads(json.dumps(result))
    markdown = (out / "evidence.md").read_text()
    expected = {"original", "retrain", "sisa", "rum", *METHODS}
    for scenario in SCENARIOS:
        rows = rows_of(quick, scenario)
        assert set(rows) == expected
        assert f"### digits, {scenario} (" in markdown
        for method in expected:
            assert f"| {method} |" in markdown
        seeds = evidence.GRIDS["quick"]["seeds"]
        assert all(r["seeds"] == seeds == len(r["runs"]) for r in rows.values())
    assert rows_of(quick, "class")["sisa"]["goal"] == "unlearning"
    assert rows_of(quick, "random")["sisa"]["goal"] == "untraining"


def test_sisa_is_exact_against_its_own_reference(quick):
    for scenario in SCENARIOS:
        sisa = rows_of(quick, scenario)["sisa"]
        assert sisa["tow"] == {"mean": 1.0, "ci95": 0.0}
        assert sisa["tow_mia"]["mean"] == 1.0
        assert sisa["forgetting_quality"] == 1.0 and sisa["fq_models"] == 3
        for run_ in sisa["runs"]:
            assert run_["gap_forget"] == run_["gap_retain"] == run_["gap_test"] == 0.0
            assert run_["mia_auc"] == run_["mia_auc_reference"]
    # the class forgotten whole: SISA predicts it for no held-out point of it
    assert rows_of(quick, "class")["sisa"]["acc_class_test"]["mean"] == 0.0


def test_summaries_are_the_means_of_the_runs(quick):
    for scenario in SCENARIOS:
        for method, row in rows_of(quick, scenario).items():
            for key in ("tow", "seconds", "samples", "mia_auc"):
                values = [r[key] for r in row["runs"]]
                assert row[key]["mean"] == pytest.approx(statistics.fmean(values)), (method, key)
            if method in ("retrain", "original"):
                continue
            assert row["samples"]["mean"] > 0  # every method processes rows
    for scenario in SCENARIOS:
        for method, row in rows_of(quick, scenario).items():
            assert row["fq_models"] == 3 and 0.0 <= row["forgetting_quality"] <= 1.0, method
            assert row["utility"]["test"] == pytest.approx(
                row["acc_test"]["mean"] / row["acc_test_reference"]["mean"]
            )
    # the forgotten class: before unlearning the model knows it, the retrain does not
    cls = rows_of(quick, "class")
    assert cls["original"]["acc_class_test"]["mean"] > 0.8
    assert cls["retrain"]["acc_class_test"]["mean"] == 0.0
