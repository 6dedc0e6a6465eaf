"""A table as users bring it, for the data tests: a clinic's CSV with its own column names
(``patient_id``, string ``diagnosis`` labels, a ``firm`` group of 20 patients, a text
column), built from the digits so that models learn something, and stores trained on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sisa.training.train import train
from tests.conftest import tiny_config

N = 400
RARE = "P0007"  # the only patient with the diagnosis "rare"
MAPPING = {
    "data.id_column": "patient_id",
    "data.label_column": "diagnosis",
    "data.group_column": "firm",
}


def clinic_frame(n: int = N, drop: frozenset[str] | set[str] = frozenset()) -> pd.DataFrame:
    """``patient_id``, ``diagnosis`` (no / yes, and one "rare"), ``firm``, ``notes`` (text,
    left out of the features by default) and 64 feature columns, less ``drop``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    ids = [f"P{i:04d}" for i in range(n)]
    diagnosis = np.where(d.target[:n] >= 5, "yes", "no").astype(object)
    diagnosis[ids.index(RARE)] = "rare"
    frame = pd.DataFrame(
        {
            "patient_id": ids,
            "diagnosis": diagnosis,
            "firm": [f"firm-{i // 20}" for i in range(n)],
            "notes": ["seen"] * n,
        }
    )
    features = pd.DataFrame(d.data[:n] / 16.0, columns=[f"px{j}" for j in range(64)])
    frame = pd.concat([frame, features], axis=1)
    return frame[~frame["patient_id"].isin(list(drop))].reset_index(drop=True)


def write_table(path: Path, drop: frozenset[str] | set[str] = frozenset()) -> Path:
    frame = clinic_frame(drop=drop)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    return path


def table_stores(tmp_path: Path, ext: str = "csv"):
    """``make(name, drop=..., groups=..., **overrides) -> url``: a store trained on the
    clinic table (without ``drop``), as ``tests/sisa/deletion/test_accept.py``'s
    ``assert_equals_scratch`` expects of its ``trained``."""

    def make(name="store", drop=frozenset(), groups=False, **overrides):
        source = write_table(tmp_path / f"{name}.{ext}", drop=set(drop))
        cfg = tiny_config(**MAPPING | {"data.source": str(source)} | overrides)
        url = str(tmp_path / name)
        train(cfg, url)
        return url

    return make
