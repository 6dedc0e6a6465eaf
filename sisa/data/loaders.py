"""Reading a dataset: the built-in sources, and CSV, Parquet or npz files by path or URL.

Every loader returns a validated ``Dataset`` or raises ``DataError`` naming the offending
IDs. CSV text is never guessed into numbers where that would change an ID's identity.
"""

from __future__ import annotations

import zipfile
from typing import BinaryIO

import fsspec
import numpy as np

from sisa.config import IN_MEMORY, DataConfig
from sisa.data.columns import frame_dataset, read_table
from sisa.data.dataset import NPZ_OPTIONAL, NPZ_REQUIRED, DataError, Dataset, validate
from sisa.data.labels import checked_labeled, fill_features

RESERVED_COLUMNS = ("id", "label", "group", "risk")  # the default mapping (sisa.data.columns)
IN_MEMORY_ERROR = (
    "this store was trained from data passed in memory (data.source = 'in-memory'), which "
    "it does not keep: give the data again (a file path or URL, e.g. --source)"
)


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


def check_npz_names(names: set[str]) -> None:
    """Refuse an archive without ``ids``, ``X`` and ``y``, or with arrays we do not know."""
    missing = [k for k in NPZ_REQUIRED if k not in names]
    if missing:
        raise DataError(f"npz file is missing arrays: {', '.join(missing)}")
    extra = sorted(names - set(NPZ_REQUIRED) - set(NPZ_OPTIONAL))
    if extra:
        raise DataError(f"npz file has unknown arrays: {', '.join(extra)}")


def rules(num_classes: int | None = None, data: DataConfig | None = None) -> DataConfig:
    """The data settings a loader reads (mapping, classes, fill); ``num_classes`` alone
    stands for the defaults with it, as callers before the mapping passed it."""
    if data is not None:
        return data
    return DataConfig.model_construct(num_classes=num_classes)


def arrays_dataset(arrays: dict[str, np.ndarray], data: DataConfig) -> Dataset:
    """Arrays named as in an npz (``ids``, ``X``, ``y``, ``groups``, ``risk``), with
    labels as they come and missing features filled by ``data.fill_missing``."""
    X = fill_features(np.asarray(arrays["X"]), data.fill_missing)
    return checked_labeled(
        arrays["ids"],
        X,
        arrays["y"],
        num_classes=data.num_classes,
        declared=data.classes,
        groups=arrays.get("groups"),
        risk=arrays.get("risk"),
    )


def _load_npz(f: BinaryIO, data: DataConfig) -> Dataset:
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
    return arrays_dataset(arrays, data)


def _read(path: str, ext: str, data: DataConfig) -> Dataset:
    with fsspec.open(path, "rb") as f:
        if ext == "npz":
            return _load_npz(f, data)
        return frame_dataset(read_table(f, ext, data), data, from_text=ext == "csv")


def load_file(
    path: str, num_classes: int | None = None, *, data: DataConfig | None = None
) -> Dataset:
    """Load .npz, .csv or .parquet from a local path or fsspec URL and validate it.

    Integer labels define ``num_classes`` as ``max(label) + 1`` unless it is given; other
    labels get a vocabulary (``sisa.data.labels``). ``data`` gives the column mapping,
    ``classes`` and ``fill_missing`` (``sisa.config.DataConfig``).
    """
    data = rules(num_classes, data)
    ext = path.lower().rsplit(".", 1)[-1] if "." in path.rsplit("/", 1)[-1] else ""
    if ext not in ("npz", "csv", "parquet"):
        raise DataError(f"unsupported file extension {ext!r} in {path!r}; use npz, csv, parquet")
    empty: tuple[type[Exception], ...] = ()  # what pandas raises for a file without rows
    if ext != "npz":
        import pandas as pd

        empty = (pd.errors.EmptyDataError,)
    try:
        return _read(path, ext, data)
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(f"no such file: {path!r}") from exc
    except empty as exc:
        raise DataError(f"empty file: {path!r}") from exc
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {path!r}: {exc}") from exc


def load_source(
    source: str,
    n: int,
    seed: int,
    num_classes: int | None = None,
    *,
    data: DataConfig | None = None,
) -> Dataset:
    """A named built-in source, or a file path/URL."""
    if source == "digits":
        return load_digits_dataset()
    if source == "synthetic-purchase":
        return synthetic_purchase(n, seed)
    if source == IN_MEMORY:
        raise DataError(IN_MEMORY_ERROR)
    return load_file(source, num_classes, data=data)
