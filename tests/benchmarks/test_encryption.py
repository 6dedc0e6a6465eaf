"""The encryption benchmark's quick suite, end to end (a few seconds): its ratios are the
quotients they claim, every artifact of the sealed store has one key, the shred is timed
within ``process``, and the headline reads the verdicts. No timing is asserted."""

from __future__ import annotations

import json
import statistics

import pytest

from benchmarks import encryption, summary
from benchmarks.harness import run

SIZES = encryption.SIZES["quick"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    [result] = run("quick", out, ["encryption"])
    return out, result


def test_the_figures_are_the_quotients_they_claim(quick):
    out, result = quick
    f = result["figures"]
    assert json.loads((out / "encryption.json").read_text()) == json.loads(json.dumps(result))
    for kind in ("plain", "sealed"):
        assert len(f["train_s"][kind]) == SIZES["repeats"]
        assert len(f["forget_s"][kind]) == SIZES["deletions"]
        assert f["serving"][kind]["n"] == SIZES["predictions"]
    plain, sealed = f["train_s"]["plain"], f["train_s"]["sealed"]
    assert f["train_ratio"] == pytest.approx(statistics.median(sealed) / statistics.median(plain))
    forget = f["forget_s"]
    assert f["forget_ratio"] == pytest.approx(
        statistics.median(forget["sealed"]) / statistics.median(forget["plain"])
    )
    assert f["verdicts"]["training"] == (f["train_ratio"] <= 1 + f["goals"]["overhead"])


def test_one_key_per_artifact_and_sealed_bytes_a_little_larger(quick):
    f = quick[1]["figures"]
    b = f["bytes"]
    artifacts = SIZES["shards"] * (1 + SIZES["slices"]) + 1  # data + stages, and the test data
    assert b["keys"] == artifacts + 1  # and the key of the store's ID hashes
    assert b["plain"] < b["sealed"] < b["plain"] * 1.01  # 37 bytes per sealed file
    shred = f["shred"]
    assert shred["keys_destroyed"] > 0 and 0 < shred["first_shred_s"] <= shred["process_s"]


def test_the_headline_reads_the_verdicts(quick):
    out, result = quick
    rows = [r for r in summary.table(out).splitlines() if r.startswith("| encryption |")]
    assert len(rows) == 2
    for row, verdict in zip(rows, ("training", "deletion"), strict=True):
        met = result["figures"]["verdicts"][verdict]
        assert row.endswith("| yes |" if met else "| **no** |")
