"""Reading prediction inputs and writing predictions for the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

RESERVED = ("id", "label", "group", "risk")


def read_features(path: str) -> tuple[np.ndarray | None, np.ndarray]:
    """(ids or None, features [n, ...]) from .npz (``X``, optional ``ids``), .csv or .parquet.

    CSV/Parquet: every column but ``id``, ``label``, ``group`` and ``risk`` is a feature.
    """
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"{path}: no such input file")
    suffix = file.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(file, allow_pickle=False) as npz:
                if "X" not in npz.files:
                    raise ValueError(f"{path}: .npz input needs an array named X")
                ids = npz["ids"] if "ids" in npz.files else None
                return ids, npz["X"]
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: unreadable .npz input ({err})") from None
    if suffix in (".csv", ".parquet"):
        frame = pd.read_csv(file) if suffix == ".csv" else pd.read_parquet(file)
        ids = frame["id"].to_numpy() if "id" in frame.columns else None
        features = frame.drop(columns=[c for c in RESERVED if c in frame.columns])
        bad = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
        if bad:
            raise ValueError(f"{path}: non-numeric feature columns: {bad[:5]}")
        return ids, features.to_numpy(dtype=np.float32)
    raise ValueError(f"{path}: unsupported input type {suffix!r}; use .npz, .csv or .parquet")


def write_predictions(path: str | None, ids: np.ndarray | None, scores: np.ndarray) -> None:
    """Write prediction, its score, and the ID when known; CSV (default) or JSON."""
    pred = scores.argmax(axis=1)
    frame = pd.DataFrame({"prediction": pred, "score": scores[np.arange(len(pred)), pred].round(6)})
    if ids is not None:
        frame.insert(0, "id", ids)
    if path is None:
        frame.to_csv(sys.stdout, index=False)
    elif path.endswith(".json"):
        Path(path).write_text(json.dumps(frame.to_dict(orient="records"), default=str))
    else:
        frame.to_csv(path, index=False)
