"""Tables as they come: which column is the ID, the label, the group, the risk and the
features (``data.id_column`` ...), for CSV, Parquet and pandas DataFrames alike.

A table is read in one place (``frame_dataset``), so a file and the same DataFrame passed
in memory give the same points. A mapped column that is missing, a selected feature
column that is boolean or not numeric, and a missing value without ``data.fill_missing``
are errors that name the column and the setting, raised before anything is written.
CSV text is never guessed into numbers where that would change an ID's identity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sisa.config import DataConfig
from sisa.data.categories import categorical_names, csv_text_columns, encoded_features
from sisa.data.dataset import DataError, Dataset, _id_array, first_values
from sisa.data.labels import checked_labeled

if TYPE_CHECKING:  # pandas (0.2 s and more) is imported by what reads a table, when it does
    import pandas as pd

_INT_TEXT = r"-?(0|[1-9][0-9]*)"
ROLES = ("id_column", "label_column", "group_column", "risk_column")


def mapped(data: DataConfig) -> dict[str, str]:
    """Setting -> column name of the four special columns; they must be distinct."""
    names = {role: getattr(data, role) for role in ROLES}
    seen: dict[str, str] = {}
    for role, name in names.items():
        if name in seen:
            raise DataError(f"data.{role} and data.{seen[name]} both name column {name!r}")
        seen[name] = role
    return names


def _require(df: pd.DataFrame, name: str, field: str) -> None:
    if name not in df.columns:
        shown = first_values([str(c) for c in df.columns])
        raise DataError(f"missing column {name!r} (data.{field}; the columns are: {shown})")


def _optional(df: pd.DataFrame, data: DataConfig, role: str) -> str | None:
    """An optional column's name if the table has it; one renamed from its default must
    exist (a stored config sets every field, so "renamed" is what can be told apart)."""
    name = getattr(data, role)
    if name in df.columns:
        return name
    if name != DataConfig.model_fields[role].default:  # named on purpose: must be there
        _require(df, name, role)
    return None


def feature_names(df: pd.DataFrame, data: DataConfig) -> list[str]:
    """The feature columns, in order: ``data.feature_columns``, else every other numeric
    column of the table (text columns left out). Boolean and non-numeric selected columns
    are refused: a number's meaning for true/false, or for text, is the user's choice.
    ``data.categorical_columns`` are features where they sit (``sisa.data.categories``)."""
    import pandas as pd

    special = set(mapped(data).values())
    categorical = categorical_names(list(df.columns), data, mapped(data))
    if data.feature_columns is not None:
        for name in data.feature_columns:
            _require(df, name, "feature_columns")
            if name in special:
                role = next(r for r, c in mapped(data).items() if c == name)
                raise DataError(f"data.feature_columns names {name!r}, which is data.{role}")
        chosen = list(data.feature_columns)
    else:
        chosen = [
            c
            for c in df.columns
            if c not in special
            and (
                c in categorical
                or pd.api.types.is_numeric_dtype(df[c])
                or pd.api.types.is_bool_dtype(df[c])
            )
        ]
    for c in chosen:
        if c in categorical:  # encoded, and its values checked, by sisa.data.categories
            continue
        if pd.api.types.is_bool_dtype(df[c]):
            raise DataError(
                f"feature column {c!r} is boolean (dtype {df[c].dtype}); store it as 0/1 or "
                "leave it out of data.feature_columns"
            )
        if not pd.api.types.is_numeric_dtype(df[c]):
            raise DataError(
                f"non-numeric feature column {c!r} (dtype {df[c].dtype}); encode it as "
                "numbers or leave it out of data.feature_columns"
            )
    if not chosen:
        raise DataError(f"no feature columns besides {', '.join(sorted(special))}")
    return chosen


def text_features(df: pd.DataFrame, data: DataConfig) -> np.ndarray:
    """Token IDs of the text column by the given tokenizer (checked against the sha256 a
    store recorded). [n] texts -> [n, max_length] int32."""
    from sisa.data.text import load_tokenizer, tokenize

    _require(df, data.text_column, "text_column")  # type: ignore[arg-type]
    if data.tokenizer is None:
        raise DataError("data.text_column needs data.tokenizer: a tokenizers JSON file")
    tok = load_tokenizer(data.tokenizer, data.tokenizer_sha256)
    texts = df[data.text_column].tolist()
    if any(t is None or t != t for t in texts):  # None or NaN: a missing text
        raise DataError(f"missing texts in column {data.text_column!r} (data.text_column)")
    return tokenize(tok, texts, data.max_length)


def feature_matrix(df: pd.DataFrame, columns: list[str], fill: float | None) -> np.ndarray:
    """[n, d] features: uint8 when every column is 0/1 integers, else float32, column by
    column (no float64 copy of the table); NaN becomes ``fill`` when one is given."""
    import pandas as pd

    binary = all(pd.api.types.is_integer_dtype(df[c]) and df[c].isin([0, 1]).all() for c in columns)
    X = np.empty((len(df), len(columns)), dtype=np.uint8 if binary else np.float32)
    na = {} if binary else {"na_value": np.nan if fill is None else fill}
    for j, c in enumerate(columns):
        X[:, j] = df[c].to_numpy(dtype=X.dtype, **na)
    return X


def table_features(df: pd.DataFrame, data: DataConfig) -> np.ndarray:
    """[n, d] features by the mapping, the same for training and ``sisa predict``: numeric
    columns by ``feature_matrix``, categorical ones encoded where they sit."""
    columns = feature_names(df, data)
    categorical = set(data.categorical_columns or ())
    X = feature_matrix(df, [c for c in columns if c not in categorical], data.fill_missing)
    return encoded_features(df, columns, X, data) if categorical else X


def column_ids(col: pd.Series, what: str, *, from_text: bool) -> np.ndarray:
    """An ID or group column as int64 if it is integer, else as strings.

    CSV text is read as strings and turned into ints only when every value is canonical
    integer text, so IDs such as ``"007"`` keep their identity instead of becoming ``7``.
    """
    import pandas as pd

    missing = np.flatnonzero(col.isna().to_numpy())
    if missing.size:
        raise DataError(f"column {what!r} has missing values at rows {first_values(missing)}")
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_float_dtype(col):
        raise DataError(f"column {what!r} has dtype {col.dtype}; it must be integer or string")
    if pd.api.types.is_integer_dtype(col):
        return col.to_numpy(dtype=np.int64)
    text = col.astype(str).to_numpy(dtype=str)  # [n] unicode
    if from_text and text.size and col.astype(str).str.fullmatch(_INT_TEXT).all():
        try:
            return np.array([int(v) for v in text.tolist()], dtype=np.int64)
        except OverflowError:
            pass  # beyond int64: keep as strings
    return _id_array(text, f"values of column {what!r}")


def _labels(col: pd.Series, data: DataConfig) -> np.ndarray:
    """Label values as they are: integers (NaN kept for ``validate`` to name), or any
    values for the vocabulary (``sisa.data.labels``)."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(col):
        raise DataError(
            f"column {col.name!r} (data.label_column) has dtype bool; labels must be "
            "integers or strings"
        )
    if pd.api.types.is_numeric_dtype(col):
        if col.isna().any():
            return col.to_numpy(dtype=np.float64, na_value=np.nan)  # [n]
        return col.to_numpy()  # [n]
    values = col.astype(object).to_numpy()  # [n] strings, categories or other values
    if all(isinstance(v, str) for v in values):
        return values.astype(str)
    return values


def index_columns(df: pd.DataFrame, data: DataConfig) -> list[str]:
    """The columns of the index: the ID, the label, and the group and risk where the table
    has them (a mapped column that is missing is refused). A streamed source reads these
    first and alone (``sisa.data.parquet``)."""
    names = mapped(data)
    _require(df, names["id_column"], "id_column")
    _require(df, names["label_column"], "label_column")
    optional = [_optional(df, data, role) for role in ("group_column", "risk_column")]
    return [names["id_column"], names["label_column"], *(c for c in optional if c is not None)]


def frame_index(
    df: pd.DataFrame, data: DataConfig, *, from_text: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(ids, labels as they are, groups or None, risk or None) of a table's rows, for
    ``checked_labeled``; ``df`` needs only the ``index_columns``."""
    import pandas as pd

    names = mapped(data)
    group_col = _optional(df, data, "group_column")
    risk_col = _optional(df, data, "risk_column")
    ids = column_ids(df[names["id_column"]], names["id_column"], from_text=from_text)
    groups = (
        None if group_col is None else column_ids(df[group_col], group_col, from_text=from_text)
    )
    risk = None
    if risk_col is not None:
        col = df[risk_col]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise DataError(
                f"column {risk_col!r} has dtype {col.dtype} (data.risk_column); it must be "
                "numbers in [0, 1]"
            )
        risk = col.to_numpy(dtype=np.float64, na_value=np.nan)  # [n], NaN named by validate
    y = _labels(df[names["label_column"]], data)
    return ids, y, groups, risk


def frame_dataset(df: pd.DataFrame, data: DataConfig, *, from_text: bool) -> Dataset:
    """A validated dataset from a table, by ``data``'s column mapping."""
    index_columns(df, data)  # a missing mapped column is named before the features
    if len(df) == 0:
        raise DataError("empty data: the table has no rows")  # column dtypes are unknowable
    X = text_features(df, data) if data.text_column is not None else table_features(df, data)
    ids, y, groups, risk = frame_index(df, data, from_text=from_text)
    return checked_labeled(
        ids, X, y, num_classes=data.num_classes, declared=data.classes, groups=groups, risk=risk
    )


def read_table(f: object, ext: str, data: DataConfig) -> pd.DataFrame:
    """A CSV or Parquet file object as a DataFrame; CSV IDs and groups stay text."""
    import pandas as pd

    if ext == "csv":
        text = {data.id_column: str, data.group_column: str} | csv_text_columns(data)
        return pd.read_csv(f, dtype=text)
    return pd.read_parquet(f)
