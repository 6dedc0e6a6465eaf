"""Offline scoring on Ray Data (``sisa predict --executor ray``): the predictions of an
.npz and of a Parquet source, written as Parquet with the original label values, are the
in-process ensemble's, row for row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from orchestrator.cli import main
from orchestrator.io import read_features
from sisa.serving.ensemble import Ensemble
from sisa.store.artifacts import SisaStore
from tests.conftest import write_digits_npz

pytestmark = pytest.mark.ray


def scored(folder) -> pd.DataFrame:
    frame = pd.read_parquet(folder)
    return frame.sort_values("id").reset_index(drop=True) if "id" in frame else frame


@pytest.mark.parametrize("kind", ["npz", "parquet"])
def test_a_source_scored_on_ray_is_scored_as_in_process(ray_cluster, url, tmp_path, kind, capsys):
    source = write_digits_npz(tmp_path / "rows.npz")
    if kind == "parquet":
        with np.load(source) as npz:
            frame = pd.DataFrame(npz["X"], columns=[f"x{i}" for i in range(npz["X"].shape[1])])
            frame.insert(0, "id", npz["ids"])
        source = tmp_path / "rows.parquet"
        frame.to_parquet(source, index=False)
    store = SisaStore(url)
    ids, X = read_features(str(source), store.config().data)
    ensemble = Ensemble.load(store)
    expected = ensemble.predict_proba(X)  # [n, C]
    out = tmp_path / "scored"
    argv = ["predict", "--store", url, "--input", str(source), "--output", str(out)]
    assert main([*argv, "--executor", "ray"]) == 0
    assert f"scored {len(X)} rows" in capsys.readouterr().err
    got = scored(out)
    order = np.argsort(ids)
    assert got["id"].tolist() == ids[order].tolist()
    assert got["prediction"].tolist() == expected.argmax(axis=1)[order].tolist()
    names = list(ensemble.class_names)
    assert got["label"].tolist() == [names[i] for i in expected.argmax(axis=1)[order]]
    scores = got[[str(n) if str(n) not in ("id", "prediction", "label", "score") else f"p_{n}"
                  for n in names]].to_numpy()  # fmt: skip
    np.testing.assert_allclose(scores, expected[order].round(6), atol=2e-6)
    # and the in-process command writes the same, as one Parquet file
    single = tmp_path / "single.parquet"
    assert main(["predict", "--store", url, "--input", str(source), "--output", str(single)]) == 0
    assert scored(single)["prediction"].tolist() == got["prediction"].tolist()


def test_scoring_on_ray_needs_an_empty_output_folder(ray_cluster, url, tmp_path, capsys):
    source = write_digits_npz(tmp_path / "rows.npz")
    argv = ["predict", "--store", url, "--input", str(source), "--executor", "ray"]
    assert main(argv) == 2
    assert "give --output" in capsys.readouterr().err
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "old.parquet").write_bytes(b"x")
    assert main([*argv, "--output", str(taken)]) == 2
    assert "not empty" in capsys.readouterr().err
