"""Labels as class indices, and the vocabulary that names them; missing features filled.

Models see class indices 0..C-1. Integer labels are those indices as they are (today's
rule: C = max(label) + 1 unless ``data.num_classes`` says more), and then no vocabulary is
recorded, so stores of integer data keep their format. Any other labels (strings, or
values named by ``data.classes``) are mapped through a vocabulary: the declared
``data.classes`` in its order, or else the sorted distinct values of the source. The
vocabulary is fixed at training and recorded with the store; a deletion never changes it,
so forgetting the only point of a class keeps that class's output (docs/design.md,
"Statistics computed from data").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sisa.data.dataset import DataError, Dataset, checked_index, first_values

ClassName = str | int


def _native(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


def _name_key(value: object) -> tuple[int, object]:
    """Sort key of a class name: integers before strings, each in natural order."""
    return (1, value) if isinstance(value, str) else (0, value)


def _distinct(y: np.ndarray) -> tuple[list[object], np.ndarray]:
    """(distinct values, inverse [n]) without requiring the values to be comparable."""
    try:
        uniq, inverse = np.unique(y, return_inverse=True)
        return [_native(v) for v in uniq], inverse.reshape(-1)
    except TypeError:  # mixed types in an object array
        seen: dict[object, int] = {}
        inverse = np.array([seen.setdefault(_native(v), len(seen)) for v in y], np.int64)
        return list(seen), inverse


def needs_vocabulary(y: np.ndarray, declared: Sequence[ClassName] | None) -> bool:
    """Whether labels go through a vocabulary: declared classes, or non-numeric labels."""
    return declared is not None or y.dtype.kind not in "biuf"


def encode_labels(
    y: np.ndarray,
    ids: np.ndarray,
    declared: Sequence[ClassName] | None,
    num_classes: int | None,
) -> tuple[np.ndarray, tuple[ClassName, ...], int]:
    """(class indices [n] int64, vocabulary, C) of labels that need a vocabulary.

    Raises ``DataError`` naming the IDs of missing labels and of labels outside
    ``data.classes``, and a ``data.num_classes`` that contradicts the vocabulary."""
    y = np.asarray(y).reshape(-1)
    if y.dtype.kind == "f":
        missing = np.isnan(y)
    elif y.dtype.kind == "O":
        missing = np.array([v is None or (isinstance(v, float) and v != v) for v in y], bool)
    else:
        missing = np.zeros(len(y), dtype=bool)
    if missing.any():
        raise DataError(f"missing labels at IDs {first_values(ids[missing])}")
    values, inverse = _distinct(y)
    if declared is not None:
        vocabulary = tuple(declared)
        position = {name: i for i, name in enumerate(vocabulary)}
        outside = [v for v in values if v not in position or isinstance(v, bool)]
        if outside:
            rows = np.isin(inverse, [values.index(v) for v in outside])
            raise DataError(
                f"labels outside data.classes at IDs {first_values(ids[rows])}: values "
                f"{first_values(outside)} (data.classes = {first_values(list(vocabulary))})"
            )
    else:
        odd = [v for v in values if isinstance(v, bool) or not isinstance(v, str | int)]
        if odd:
            raise DataError(
                f"labels must be integers or strings (or be named in data.classes); "
                f"got values {first_values(odd)}"
            )
        vocabulary = tuple(sorted(values, key=_name_key))
        position = {name: i for i, name in enumerate(vocabulary)}
    if num_classes is not None and num_classes != len(vocabulary):
        raise DataError(
            f"data.num_classes = {num_classes}, but the labels have a vocabulary of "
            f"{len(vocabulary)} classes ({first_values(list(vocabulary))})"
        )
    lookup = np.array([position[v] for v in values], dtype=np.int64)  # [distinct]
    return lookup[inverse], vocabulary, len(vocabulary)


def fill_features(X: np.ndarray, fill: float | None) -> np.ndarray:
    """Features with NaN replaced by ``data.fill_missing`` (a copy); unchanged without one.

    Only NaN is missing: an infinite value is a value, and stays refused."""
    if fill is None or X.dtype.kind != "f":
        return X
    nan = np.isnan(X)
    if not nan.any():
        return X
    return np.where(nan, np.asarray(fill, dtype=X.dtype), X)


def checked_labeled(
    ids: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    *,
    num_classes: int | None,
    declared: Sequence[ClassName] | None = None,
    groups: np.ndarray | None = None,
    risk: np.ndarray | None = None,
) -> Dataset:
    """``checked_index`` of labels as they come: mapped through a vocabulary when they
    need one (``needs_vocabulary``), else integers as today."""
    y = np.asarray(y)
    if not needs_vocabulary(y, declared) or np.ndim(ids) != 1 or y.ndim != 1:
        return checked_index(ids, X, y, num_classes, groups, risk)
    if y.shape[0] != np.shape(ids)[0]:  # ragged: let validate name the row counts
        return checked_index(ids, X, y, num_classes, groups, risk)
    ids_checked = np.asarray(ids)
    index, vocabulary, count = encode_labels(y, ids_checked, declared, num_classes)
    return checked_index(ids, X, index, count, groups, risk, classes=vocabulary)
