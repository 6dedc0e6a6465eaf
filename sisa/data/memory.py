"""Data passed to ``train`` in memory, in the forms a Python user already holds it.

``as_dataset`` turns each form into one validated ``Dataset``, which the ingest job then
streams into the store like a file source (``sisa.data.sources.InMemorySource``):

- a ``sisa.Dataset``, as it is (validated again);
- a dict of numpy arrays named as in an ``.npz`` file: ``ids``, ``X``, ``y``, optional
  ``groups`` and ``risk`` (labels as they come: integers, or strings for a vocabulary);
- a pandas DataFrame, read by the column mapping of ``data`` (``sisa.data.columns``);
- a map-style dataset (``torch.utils.data.Dataset``, or anything with ``__len__`` and
  ``__getitem__`` returning ``(features, label)``) together with ``ids``, one per index.

Points are keyed by ID, never by position, so the order of the rows (or of a torch
dataset's indices) changes nothing a store trains. The store records ``data.source =
"in-memory"``: it keeps the points it trains on, but not the source, so a command that
needs the source again (``evaluate --forgotten``) must be given it.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

import numpy as np

from sisa.config import DataConfig
from sisa.data.columns import frame_dataset
from sisa.data.dataset import NPZ_OPTIONAL, NPZ_REQUIRED, DataError, Dataset, validate
from sisa.data.labels import fill_features
from sisa.data.loaders import arrays_dataset

FORMS = "a sisa.Dataset, a dict of arrays (ids, X, y[, groups, risk]), a pandas DataFrame, "
FORMS += "or a map-style dataset with ids="


def _scalar(value: object) -> object:
    """A label as a plain value: a 0-d tensor or numpy scalar becomes a Python one."""
    item = getattr(value, "item", None)
    if callable(item) and np.ndim(value) == 0:
        return item()
    return value


def _labels(values: list[object]) -> np.ndarray:
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=np.int64)
    if all(isinstance(v, str) for v in values):
        return np.asarray(values, dtype=str)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def from_map_style(dataset: object, ids: Sequence[object], data: DataConfig) -> Dataset:
    """Rows ``dataset[i]`` = ``(features, label)`` for i in 0..n-1, keyed by ``ids[i]``."""
    n = len(dataset)  # type: ignore[arg-type]
    ids_arr = np.asarray(list(ids))
    if ids_arr.ndim != 1 or len(ids_arr) != n:
        raise DataError(f"ids= must give one ID per index of the dataset: {len(ids_arr)} for {n}")
    if n == 0:
        raise DataError("empty data: no points")
    features, labels = [], []
    for i in range(n):
        item = dataset[i]  # type: ignore[index]
        if not isinstance(item, tuple | list) or len(item) < 2:
            raise DataError(f"dataset[{i}] must be (features, label), got {type(item).__name__}")
        features.append(np.asarray(item[0]))
        labels.append(_scalar(item[1]))
    shapes = {x.shape for x in features}
    if len(shapes) > 1:
        raise DataError(f"features of different shapes: {sorted(shapes)[:3]}")
    arrays = {"ids": ids_arr, "X": np.stack(features), "y": _labels(labels)}
    return arrays_dataset(arrays, data)


def as_dataset(data: object, rules: DataConfig, ids: Sequence[object] | None = None) -> Dataset:
    """One validated ``Dataset`` from any in-memory form (see the module docstring), or
    ``DataError`` naming the problem; nothing is written anywhere."""
    if ids is not None and (isinstance(data, Dataset | Mapping) or _is_frame(data)):
        raise DataError("ids= goes with a map-style dataset; the other forms carry their IDs")
    if isinstance(data, Dataset):
        return validate(
            Dataset(
                ids=data.ids,
                X=fill_features(np.asarray(data.X), rules.fill_missing),
                y=data.y,
                num_classes=data.num_classes,
                groups=data.groups,
                risk=data.risk,
                classes=data.classes,
            )
        )
    if isinstance(data, Mapping):
        missing = [k for k in NPZ_REQUIRED if k not in data]
        extra = sorted(set(data) - set(NPZ_REQUIRED) - set(NPZ_OPTIONAL))
        if missing or extra:
            raise DataError(
                f"a dict of arrays needs ids, X and y (optional: groups, risk); "
                f"missing {missing or 'none'}, unknown {extra or 'none'}"
            )
        return arrays_dataset({k: np.asarray(v) for k, v in data.items()}, rules)
    if _is_frame(data):
        return frame_dataset(data, rules, from_text=False)  # type: ignore[arg-type]
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        if ids is None:
            raise DataError("a map-style dataset needs ids=: one ID per index, 0..len-1")
        return from_map_style(data, ids, rules)
    raise DataError(f"data must be {FORMS}; got {type(data).__name__}")


def _is_frame(data: object) -> bool:
    pandas = sys.modules.get("pandas")  # a DataFrame exists only where pandas was imported
    return pandas is not None and isinstance(data, pandas.DataFrame)
