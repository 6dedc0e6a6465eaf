"""Categorical feature columns: text or integer values encoded as one-hot columns or one
ordinal column, by categories that are given, never computed from the training points.

A column's categories are ``data.categories[column]`` in the order given, or else the
distinct values of the same column of ``data.category_reference``, in order of first
appearance: a CSV/Parquet table never subject to deletion, recorded by its sha256 at
training and refused wherever the source is read again once it changed. Categories taken
from the training data would be a whole-set statistic: forgetting the only point of a
category would change the encoding, so the width of every shard's input (docs/design.md,
"Statistics computed from data"). With given categories a deletion never changes the
encoding, and a value outside them is refused, naming the column.

A value matches a category by its text: the integer 7 and the text ``"7"`` are one
category, so a CSV (whose categorical cells are read as text: ``"007"`` stays ``"007"``),
a Parquet file and a DataFrame of the same table encode alike.

Encoded columns take the place of their column among the features (``data.feature_columns``
order, else table order): ``onehot`` gives one 0/1 column per category, in category order;
``ordinal`` one column holding the category's index as a float.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sisa.config import DataConfig
from sisa.data.dataset import DataError, first_values, read_recorded

if TYPE_CHECKING:  # pandas is imported by what reads a table, when it does
    import pandas as pd

Category = str | int
FIELD = "data.categorical_columns"


@dataclass(frozen=True, kw_only=True)
class Reference:
    """A category reference as read from its file, with what a store records of it."""

    path: str
    sha256: str  # of the file's bytes
    columns: dict[str, tuple[Category, ...]]  # the columns asked for, with their categories


def csv_text_columns(data: DataConfig) -> dict[str, type]:
    """``pd.read_csv`` dtypes that keep categorical cells as text (``"007"`` is not 7)."""
    return {name: str for name in data.categorical_columns or ()}


def categorical_names(
    columns: Sequence[object], data: DataConfig, roles: dict[str, str]
) -> set[str]:
    """The categorical columns, each checked to be a column of the table and no special
    column (``roles``: setting -> column name)."""
    names = set(data.categorical_columns or ())
    for name in data.categorical_columns or ():
        role = next((r for r, c in roles.items() if c == name), None)
        if role is not None:
            raise DataError(f"{FIELD} names {name!r}, which is data.{role}")
        if name not in columns:
            shown = first_values([str(c) for c in columns])
            raise DataError(f"missing column {name!r} ({FIELD}; the columns are: {shown})")
    return names


def _keys(col: pd.Series, what: str) -> np.ndarray:
    """The values of a categorical column as their text [n]; missing values, booleans,
    floats and other values are refused, naming the column."""
    import pandas as pd

    missing = np.flatnonzero(col.isna().to_numpy())
    if missing.size:
        raise DataError(
            f"column {col.name!r} ({what}) has missing values at rows {first_values(missing)}; "
            "a category is never filled"
        )
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_float_dtype(col):
        raise DataError(
            f"column {col.name!r} ({what}) has dtype {col.dtype}; categories are text or integers"
        )
    if pd.api.types.is_integer_dtype(col):
        return col.to_numpy().astype(str)
    values = col.astype(object).to_numpy()  # [n] strings, integers or other values
    odd = [
        v
        for v in pd.unique(values)
        if isinstance(v, bool | np.bool_) or not isinstance(v, str | int | np.integer)
    ]
    if odd:
        raise DataError(
            f"column {col.name!r} ({what}) holds values that are neither text nor integers: "
            f"{first_values(odd)}"
        )
    return np.array([v if isinstance(v, str) else str(int(v)) for v in values], dtype=str)


def read_reference(
    path: str, names: Sequence[str], expected_sha256: str | None = None
) -> Reference:
    """The categories of columns ``names`` from a reference table; with ``expected_sha256``
    (the store's record), refuse a file whose bytes changed since training."""
    import pandas as pd

    raw, sha = read_recorded(
        path,
        "category reference",
        expected_sha256,
        "its categories could encode the features differently",
    )
    ext = path.lower().rsplit(".", 1)[-1]
    try:
        if ext == "csv":
            table = pd.read_csv(io.BytesIO(raw), dtype=str)
        elif ext == "parquet":
            table = pd.read_parquet(io.BytesIO(raw))
        else:
            raise DataError(f"data.category_reference {path!r} must be a .csv or .parquet file")
    except (ValueError, OSError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"cannot read the category reference {path!r}: {exc}") from None
    columns: dict[str, tuple[Category, ...]] = {}
    for name in names:
        if name not in table.columns:
            shown = first_values([str(c) for c in table.columns])
            raise DataError(
                f"the category reference {path!r} (data.category_reference) has no column "
                f"{name!r} of {FIELD}, and data.categories does not give it; its columns "
                f"are: {shown}"
            )
        col = table[name].dropna()
        if pd.api.types.is_float_dtype(col) and col.eq(col.round()).all():
            col = col.astype(np.int64)  # an integer column with blanks, as Parquet gives it
        seen: dict[str, Category] = {}
        for key, value in zip(_keys(col, "data.category_reference"), col.tolist(), strict=True):
            seen.setdefault(str(key), value if isinstance(value, str) else int(value))
        if not seen:
            raise DataError(f"column {name!r} of the category reference {path!r} is empty")
        columns[name] = tuple(seen.values())
    return Reference(path=path, sha256=sha, columns=columns)


def categories_of(data: DataConfig) -> dict[str, tuple[Category, ...]]:
    """Each categorical column's categories, in order: given, else from the reference."""
    given = {name: tuple(values) for name, values in (data.categories or {}).items()}
    rest = [c for c in data.categorical_columns or () if c not in given]
    if rest and data.category_reference is None:  # a config built without validation
        raise DataError(
            f"column {rest[0]!r} ({FIELD}) has no categories: give them in data.categories or "
            "name a data.category_reference file; they are never computed from the training "
            "data (docs/design.md, 'Statistics computed from data')"
        )
    if rest:
        ref = read_reference(data.category_reference, rest, data.category_reference_sha256)  # type: ignore[arg-type]
        given |= ref.columns
    return {name: given[name] for name in data.categorical_columns or ()}


def encode(col: pd.Series, categories: Sequence[Category], data: DataConfig) -> np.ndarray:
    """One column's encoding: [n, len(categories)] uint8 one-hot, or [n, 1] float32 index."""
    import pandas as pd

    keys = _keys(col, FIELD)  # [n]
    index = pd.Index([str(c) for c in categories]).get_indexer(keys)  # [n], -1: unseen
    unseen = index < 0
    if unseen.any():
        where = (
            f"not among data.categories[{col.name!r}]"
            if col.name in (data.categories or {})
            else f"a category not seen in the reference {data.category_reference!r}"
        )
        raise DataError(
            f"column {col.name!r} ({FIELD}) has values {where}: "
            f"{first_values(pd.unique(keys[unseen]))} (its categories: "
            f"{first_values(list(categories))})"
        )
    if data.categorical_encoding == "ordinal":
        return index.astype(np.float32)[:, None]
    out = np.zeros((len(keys), len(categories)), dtype=np.uint8)  # [n, k]
    out[np.arange(len(keys)), index] = 1
    return out


def encoded_features(
    df: pd.DataFrame, columns: Sequence[str], numeric: np.ndarray, data: DataConfig
) -> np.ndarray:
    """[n, d] features: ``numeric`` (the other ``columns``, in order) with each categorical
    column's encoding put where that column sits. uint8 when the numbers are (0/1) and the
    encoding is one-hot, else float32."""
    categories = categories_of(data)
    onehot = data.categorical_encoding == "onehot"
    dtype = np.uint8 if numeric.dtype == np.uint8 and onehot else np.float32
    blocks, j, run = [], 0, 0  # run: numeric columns since the last categorical one
    for name in columns:
        if name not in categories:
            j, run = j + 1, run + 1
            continue
        if run:
            blocks.append(numeric[:, j - run : j])
            run = 0
        blocks.append(encode(df[name], categories[name], data))
    if run:
        blocks.append(numeric[:, j - run : j])
    return np.concatenate(blocks, axis=1, dtype=dtype)
