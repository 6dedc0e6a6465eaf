"""The inference benchmark's quick suite, run once through the harness, and the serving
benchmark's place in the suites (full only: it starts a Ray cluster of its own) with its
uvicorn reference subprocess. No timing is asserted; only that every figure is there and
consistent."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from benchmarks.harness import registry, run
from sisa.serving.inference import auto_strategy

GOAL = 1.25
VARIANTS = ("single", "loop", "fused", "e2e_loop", "e2e_fused", "e2e_auto")


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench")
    threads = torch.get_num_threads()
    [result] = run("quick", out, ["inference"], command="python -m benchmarks run --suite quick")
    assert torch.get_num_threads() == threads  # the cells' thread counts do not leak
    return out, result


@pytest.fixture(scope="module")
def figures(result: tuple[Path, dict[str, Any]]) -> dict[str, Any]:
    return result[1]["figures"]


def test_the_envelope_and_the_tables_are_written(result: tuple[Path, dict[str, Any]]) -> None:
    out, envelope = result
    written = json.loads((out / "inference.json").read_text())
    assert written == json.loads(json.dumps(envelope, default=str))
    assert written["benchmark"] == "inference" and written["suite"] == "quick"
    assert len(written["commit"].split()[0]) == 40
    assert written["config"]["shards"] == [5, 20] and written["config"]["rows"] == [1, 64]
    markdown = (out / "inference.md").read_text()
    assert written["commit"] in markdown
    for heading in ("## CPU, 1 torch thread(s)", "## CUDA", "## Loop time / fused time"):
        assert heading in markdown
    assert "## Reading" in markdown and all(
        line in markdown for line in written["figures"]["reading"]
    )
    for cell in written["figures"]["cpu"]:
        assert f"| {cell['model']} | {cell['shards']} | {cell['n']:,} |" in markdown


def test_every_cell_of_the_grid_is_measured(figures: dict[str, Any]) -> None:
    cells = [(c["model"], c["shards"], c["n"], c["threads"]) for c in figures["cpu"]]
    expected = [
        (m, s, n, 1) for m in ("digits MLP", "purchase MLP") for s in (5, 20) for n in (1, 64)
    ]
    assert cells == expected and figures["threads"] == [1]
    assert (figures["cuda"] != []) == torch.cuda.is_available()


def test_ratios_are_against_s_single_forwards(figures: dict[str, Any]) -> None:
    for c in figures["cpu"] + figures["cuda"]:
        median = c["median_s"]
        assert set(median) == set(VARIANTS) and all(v > 0 for v in median.values())
        base = c["shards"] * median["single"]
        for name in VARIANTS[1:]:
            assert c["ratio"][name] == pytest.approx(median[name] / base)
            lo, hi = c["quartiles_s"][name]
            assert lo <= hi
        assert c["auto_e2e_ratio"] == c["ratio"]["e2e_auto"]
        assert c["meets"] == [s for s in ("loop", "fused") if c["ratio"][f"e2e_{s}"] <= GOAL]
        assert c["auto"] == auto_strategy(c["shards"], torch.device(c["device"]))
        assert c["rounds"] >= 5


def test_fused_and_loop_agree(figures: dict[str, Any]) -> None:
    for c in figures["cpu"]:
        assert c["max_abs_diff"] < 1e-4 and c["label_agreement"] >= 0.99
        assert math.isfinite(c["weights_bytes"]) and c["weights_bytes"] > 0


def test_serving_runs_in_the_full_suite_only(tmp_path: Path) -> None:
    from benchmarks import serving

    assert serving.SUITES == ("full",)
    assert "serving" not in registry("quick") and registry("full")["serving"] is serving.run
    with pytest.raises(ValueError, match="serving not in the quick suite"):
        run("quick", tmp_path, ["serving"])
    assert not list(tmp_path.iterdir())
    assert set(serving.SIZES) == {"full"}


def test_the_serving_benchmarks_uvicorn_reference_starts_and_answers(tmp_path: Path, tiny) -> None:
    """``python -m benchmarks.http_servers --plain-server``: the same app without Ray."""
    import requests

    from benchmarks.http_load import JSON, body_of
    from benchmarks.http_servers import start_plain
    from orchestrator.executors import InProcessExecutor
    from sisa.serving.predictor import Predictor
    from sisa.store.artifacts import SisaStore
    from sisa.store.layout import TEST_PREFIX
    from sisa.training.train import train

    url = str(tmp_path / "store")
    train(tiny(), url, executor=InProcessExecutor(progress=False))
    store = SisaStore(url)
    test_x = store.read_data(store.latest_head(TEST_PREFIX).data)["X"]  # type: ignore[union-attr]
    rows = test_x[:2].reshape(2, -1).astype(np.float32)
    proc, base = start_plain(url)
    try:
        body = body_of(rows, True)
        r = requests.post(f"{base}/predict", data=body, headers=JSON, timeout=30)
    finally:
        proc.terminate()
        proc.wait(30)
    assert r.status_code == 200, r.text
    expected = Predictor(url).predict(rows, probabilities=True)
    assert r.json()["labels"] == expected.labels.tolist()
    assert r.json()["model"]["version"] == expected.version
