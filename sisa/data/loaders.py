"""Reading a dataset: the built-in sources, and CSV, Parquet or npz files by path or URL.

Every loader returns a validated ``Dataset`` or raises ``DataError`` naming the offending
IDs. CSV text is never guessed into numbers where that would change an ID's identity.
"""

from __future__ import annotations

import zipfile
from typing import TYPE_CHECKING, BinaryIO

import fsspec
import numpy as np

from sisa.data.dataset import (
    NPZ_OPTIONAL,
    NPZ_REQUIRED,
    DataError,
    Dataset,
    _id_array,
    checked_arrays,
    checked_index,
    first_values,
    validate,
)

if TYPE_CHECKING:  # pandas (0.2 s and more) is imported by what reads a table, when it does
    import pandas as pd

RESERVED_COLUMNS = ("id", "label", "group", "risk")  # every other column is a feature
_INT_TEXT = r"-?(0|[1-9][0-9]*)"


def load_digits_dataset() -> Dataset:
    """scikit-learn's bundled 8x8 digits: small, offline, 10 classes."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    X = (bunch.data / 16.0).astype(np.float32)  # [1797, 64] in [0, 1]
    y = bunch.target.astype(np.int64)  # [1797]
    return validate(Dataset(ids=np.arange(len(y), dtype=np.int64), X=X, y=y, num_classes=10))


def synthetic_purchase(
    n: int, seed: int, num_features: int = 600, num_classes: int = 100
) -> Dataset:
    """A synthetic stand-in for Purchase-100 (see ``sisa.data.purchase``), held in memory."""
    from sisa.data.purchase import SyntheticPurchase

    try:
        gen = SyntheticPurchase(n, seed, num_features, num_classes)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    X = np.empty((n, num_features), dtype=np.uint8)  # [n, F]
    for start, chunk in gen.chunks():
        X[start : start + len(chunk)] = chunk
    return validate(Dataset(ids=gen.ids, X=X, y=gen.labels(), num_classes=num_classes))


def _column_ids(col: pd.Series, what: str, *, from_text: bool) -> np.ndarray:
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


def _from_frame(df: pd.DataFrame, num_classes: int | None, *, from_text: bool) -> Dataset:
    """A dataset from a table with ``id``, ``label``, optional ``group`` and ``risk``, and
    feature columns."""
    import pandas as pd

    for name in ("id", "label"):
        if name not in df.columns:
            raise DataError(f"missing column {name!r} (columns: {first_values(list(df.columns))})")
    if len(df) == 0:
        raise DataError("empty data: the table has no rows")  # column dtypes are unknowable
    feature_cols = [c for c in df.columns if c not in RESERVED_COLUMNS]
    if not feature_cols:
        raise DataError(f"no feature columns besides {', '.join(RESERVED_COLUMNS)}")
    for c in feature_cols:
        if not (pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])):
            raise DataError(f"non-numeric feature column {c!r} (dtype {df[c].dtype})")
    binary = all(
        (pd.api.types.is_bool_dtype(df[c]) or pd.api.types.is_integer_dtype(df[c]))
        and df[c].isin([0, 1]).all()
        for c in feature_cols
    )
    X = np.empty((len(df), len(feature_cols)), dtype=np.uint8 if binary else np.float32)
    for j, c in enumerate(feature_cols):  # column by column: no float64 copy of the table
        na = {} if binary else {"na_value": np.nan}
        X[:, j] = df[c].to_numpy(dtype=X.dtype, **na)
    ids = _column_ids(df["id"], "id", from_text=from_text)
    groups = None
    if "group" in df.columns:
        groups = _column_ids(df["group"], "group", from_text=from_text)
    risk = None
    if "risk" in df.columns:
        col = df["risk"]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise DataError(f"column 'risk' has dtype {col.dtype}; it must be numbers in [0, 1]")
        risk = col.to_numpy(dtype=np.float64, na_value=np.nan)  # [n], NaN named by validate
    label = df["label"]
    if not pd.api.types.is_numeric_dtype(label) or pd.api.types.is_bool_dtype(label):
        raise DataError(f"column 'label' has dtype {label.dtype}; labels must be integers")
    if label.isna().any():
        y = label.to_numpy(dtype=np.float64, na_value=np.nan)  # [n], NaN named by validate
    else:
        y = label.to_numpy()  # [n]
    return checked_index(ids, X, y, num_classes, groups, risk)


def check_npz_names(names: set[str]) -> None:
    """Refuse an archive without ``ids``, ``X`` and ``y``, or with arrays we do not know."""
    missing = [k for k in NPZ_REQUIRED if k not in names]
    if missing:
        raise DataError(f"npz file is missing arrays: {', '.join(missing)}")
    extra = sorted(names - set(NPZ_REQUIRED) - set(NPZ_OPTIONAL))
    if extra:
        raise DataError(f"npz file has unknown arrays: {', '.join(extra)}")


def _load_npz(f: BinaryIO, num_classes: int | None) -> Dataset:
    """Arrays from an .npz file object; object arrays are refused, never unpickled."""
    with np.load(f, allow_pickle=False) as npz:
        names = set(npz.files)
        check_npz_names(names)
        arrays = {}
        for k in sorted(names):
            try:
                arrays[k] = npz[k]
            except ValueError as exc:
                raise DataError(f"npz array {k!r} cannot be loaded safely: {exc}") from exc
    return checked_arrays(arrays, num_classes)


def _read(path: str, ext: str, num_classes: int | None) -> Dataset:
    with fsspec.open(path, "rb") as f:
        if ext == "npz":
            return _load_npz(f, num_classes)
        import pandas as pd

        if ext == "csv":
            df = pd.read_csv(f, dtype={"id": str, "group": str})
            return _from_frame(df, num_classes, from_text=True)
        return _from_frame(pd.read_parquet(f), num_classes, from_text=False)


def load_file(path: str, num_classes: int | None = None) -> Dataset:
    """Load .npz, .csv or .parquet from a local path or fsspec URL and validate it.

    Labels define ``num_classes`` as ``max(label) + 1`` unless it is given.
    """
    ext = path.lower().rsplit(".", 1)[-1] if "." in path.rsplit("/", 1)[-1] else ""
    if ext not in ("npz", "csv", "parquet"):
        raise DataError(f"unsupported file extension {ext!r} in {path!r}; use npz, csv, parquet")
    empty: tuple[type[Exception], ...] = ()  # what pandas raises for a file without rows
    if ext != "npz":
        import pandas as pd

        empty = (pd.errors.EmptyDataError,)
    try:
        return _read(path, ext, num_classes)
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(f"no such file: {path!r}") from exc
    except empty as exc:
        raise DataError(f"empty file: {path!r}") from exc
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {path!r}: {exc}") from exc


def load_source(source: str, n: int, seed: int, num_classes: int | None = None) -> Dataset:
    """A named built-in source, or a file path/URL."""
    if source == "digits":
        return load_digits_dataset()
    if source == "synthetic-purchase":
        return synthetic_purchase(n, seed)
    return load_file(source, num_classes)
