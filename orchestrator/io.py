"""Reading prediction inputs and writing predictions for the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from sisa.config import DataConfig
from sisa.data.categories import csv_text_columns
from sisa.data.columns import table_features, text_features
from sisa.data.dataset import DataError

FIXED = ("id", "prediction", "label", "score")  # the columns before the per-class scores


def read_features(
    path: str, data: DataConfig | None = None
) -> tuple[np.ndarray | None, np.ndarray]:
    """(ids or None, features [n, ...]) from .npz (``X``, optional ``ids``), .csv or .parquet.

    CSV/Parquet: the feature columns training chose by the store's column mapping
    (``data``): ``data.feature_columns``, else every numeric column but the ID, label,
    group and risk columns; missing values are filled as in training, and categorical
    columns encoded by the categories training used (a changed reference is refused).
    A text store's ``data.text_column`` becomes token IDs by the tokenizer it recorded (a
    tokenizer file that changed since training is refused).
    """
    data = data if data is not None else DataConfig()
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
        text = csv_text_columns(data)  # categories as text, as training reads them
        frame = pd.read_csv(file, dtype=text) if suffix == ".csv" else pd.read_parquet(file)
        return frame_features(frame, data, path)
    raise ValueError(f"{path}: unsupported input type {suffix!r}; use .npz, .csv or .parquet")


def frame_features(
    frame: pd.DataFrame, data: DataConfig, where: str
) -> tuple[np.ndarray | None, np.ndarray]:
    """(ids or None, features) of a table by the store's column mapping (``read_features``)."""
    ids = frame[data.id_column].to_numpy() if data.id_column in frame.columns else None
    try:
        if data.text_column is not None:
            return ids, text_features(frame, data)  # [n, max_length] int32 token IDs
        return ids, table_features(frame, data).astype(np.float32)
    except DataError as err:
        raise ValueError(f"{where}: {err}") from None


def write_predictions(
    path: str | None,
    ids: np.ndarray | None,
    scores: np.ndarray,
    classes: list[str | int] | None = None,
) -> None:
    """Write ``predictions_frame`` as CSV (default), JSON or Parquet (by ``path``)."""
    frame = predictions_frame(ids, scores, classes)
    if path is None:
        frame.to_csv(sys.stdout, index=False)
    elif path.endswith(".json"):
        Path(path).write_text(json.dumps(frame.to_dict(orient="records"), default=str))
    elif path.endswith(".parquet"):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)


def predictions_frame(
    ids: np.ndarray | None, scores: np.ndarray, classes: list[str | int] | None = None
) -> pd.DataFrame:
    """Per row: the ID when known, the predicted class index, its original label value,
    its score, and every class's score under the class's name. A class named like a fixed
    column gets ``p_`` before its name."""
    pred = scores.argmax(axis=1)
    names = list(range(scores.shape[1])) if classes is None else list(classes)
    frame = pd.DataFrame(
        {
            "prediction": pred,
            "label": [names[i] for i in pred],
            "score": scores[np.arange(len(pred)), pred].round(6),
        }
    )
    for c, name in enumerate(names):
        header = str(name)
        frame[f"p_{header}" if header in FIXED or header in frame.columns else header] = scores[
            :, c
        ].round(6)
    if ids is not None:
        frame.insert(0, "id", ids)
    return frame
