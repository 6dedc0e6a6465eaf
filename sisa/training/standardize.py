"""Standard scaling that keeps exactness: statistics per shard, from the slices a stage saw.

``data.scale = "standard"`` puts a ``Standardized`` layer in front of the model: it
subtracts a mean and divides by a scale, feature by feature. Where those come from
(``data.scale_from``) is the statistics rule of docs/design.md:

- ``stage`` (the default): at the start of stage k the layer is fitted on the shard's
  slices 1..k, the points stage k trains on. The statistics are buffers of the model, so
  they are stored with the stage's checkpoint, purged with it, and served with it (a
  rolled-back shard predicts with the statistics of the stage it rolled back to). A
  deletion in slice j rolls back to stage j-1, whose statistics never saw the point;
  stage j refits on what remains, as a training from scratch would.
- ``constants``: ``data.scale_mean`` and ``data.scale_std`` are given in the config and
  never fitted.
- ``reference``: computed once, at training, from ``data.scale_reference``, a set never
  subject to deletion (``reference_statistics``). Training records them in the store's
  config as constants, beside the file's sha256: every shard task, retrain and ``verify``
  uses the recorded values, and a training that reads the file again refuses it once its
  bytes changed.

Statistics over the whole training set are refused by the config: they would carry every
point into every shard.

The fit is a float64 sum over the rows in their stored order, which a training from
scratch on the remaining points reproduces, then one cast to float32.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sisa.config import DataConfig
from sisa.data.dataset import DataError, read_recorded

MIN_STD = 1e-12  # a constant feature keeps scale 1 rather than dividing by zero


class Standardized(nn.Module):
    """``model((x - mean) / std)``, with ``mean`` and ``std`` buffers [*input_shape]."""

    def __init__(self, model: nn.Module, input_shape: Sequence[int], per_stage: bool) -> None:
        super().__init__()
        self.model, self.per_stage = model, per_stage
        self.register_buffer("mean", torch.zeros(tuple(input_shape)))
        self.register_buffer("std", torch.ones(tuple(input_shape)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, *in] -> [B, C]
        return self.model((x - self.mean) / self.std)

    def set(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Load statistics [*input_shape] (float64 from ``fit``, or constants)."""
        std = np.where(std < MIN_STD, 1.0, std)
        self.mean.copy_(torch.from_numpy(np.asarray(mean, np.float64)).to(self.mean))
        self.std.copy_(torch.from_numpy(np.asarray(std, np.float64)).to(self.std))


def fit(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) standard deviation per feature of ``X`` [m, *f], in float64.
    No rows (a stage of an empty shard): mean 0, scale 1."""
    if len(X) == 0:
        return np.zeros(X.shape[1:]), np.ones(X.shape[1:])
    rows = X.astype(np.float64)  # [m, *f]
    mean = rows.sum(axis=0) / len(rows)
    var = ((rows - mean) ** 2).sum(axis=0) / len(rows)
    return mean, np.sqrt(var)


def standardizer(model: nn.Module) -> Standardized | None:
    """The ``Standardized`` layer of a model, wherever other wrappers put it."""
    return next((m for m in model.modules() if isinstance(m, Standardized)), None)


def check_statistics(data: DataConfig, feature_shape: Sequence[int]) -> None:
    """Refuse given or recorded statistics that do not fit the source's features, before
    anything is written: one value for every feature, or one each."""
    if data.scale != "standard" or data.scale_from == "stage":
        return
    size = int(np.prod(tuple(feature_shape)))
    for field, values in (("scale_mean", data.scale_mean), ("scale_std", data.scale_std)):
        if values is not None and len(values) not in (1, size):
            where = (
                f"the scale reference {data.scale_reference!r} has"
                if data.scale_from == "reference"
                else f"data.{field} gives"
            )
            raise DataError(
                f"{where} {len(values)} value(s) for the source's {size} features "
                f"(shape {tuple(feature_shape)})"
            )


def constants(values: Sequence[float], input_shape: Sequence[int]) -> np.ndarray:
    """``data.scale_mean`` / ``scale_std`` as an array [*input_shape]: one value for every
    feature, or one per feature."""
    arr = np.asarray(values, dtype=np.float64)
    size = int(np.prod(input_shape))
    if arr.size == 1:
        return np.full(tuple(input_shape), float(arr[0]))
    if arr.size != size:
        raise ValueError(f"{arr.size} scaling constants for {size} features (data.scale_mean)")
    return arr.reshape(tuple(input_shape))


@dataclass(frozen=True, kw_only=True)
class ReferenceStatistics:
    """What training records of ``data.scale_reference``."""

    sha256: str  # of the file's bytes
    mean: tuple[float, ...]  # per feature, float64 as Python floats (exact in JSON/TOML)
    std: tuple[float, ...]
    rows: int


def reference_features(raw: bytes, path: str, data: DataConfig) -> np.ndarray:
    """The reference's features as stored [m, *f]: an ``.npz``'s ``X``, or a table's by
    the source's column mapping (``sisa.data.columns.table_features``)."""
    from sisa.data.columns import read_table, table_features

    ext = path.lower().rsplit(".", 1)[-1]
    what = f"the scale reference {path!r} (data.scale_reference)"
    try:
        if ext == "npz":
            with np.load(io.BytesIO(raw), allow_pickle=False) as f:
                if "X" not in f.files:
                    raise DataError(f"{what} has no array 'X'; its arrays: {sorted(f.files)}")
                return np.asarray(f["X"])
        if ext in ("csv", "parquet"):
            df = read_table(io.BytesIO(raw), ext, data)
            if len(df) == 0:
                raise DataError(f"{what} has no rows")
            return table_features(df, data)
    except (ValueError, OSError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"cannot read {what}: {exc}") from None
    raise DataError(f"{what} must be an .npz, .csv or .parquet file")


def reference_statistics(path: str, data: DataConfig) -> ReferenceStatistics:
    """Mean and scale per feature of the reference set (``fit``), checked to hold only
    finite values, and its sha256; a file whose bytes changed since a store recorded it is
    refused (``data.scale_reference_sha256``). Its shape is checked against the source's
    by ``check_statistics``, which the ingest job runs before it writes."""
    raw, sha = read_recorded(
        path,
        "scale reference",
        data.scale_reference_sha256,
        "its statistics would scale the features differently",
    )
    X = reference_features(raw, path, data)  # [m, *f]
    if X.ndim < 2 or len(X) == 0:
        raise DataError(
            f"the scale reference {path!r} (data.scale_reference) holds no rows of features "
            f"(shape {X.shape})"
        )
    if X.dtype.kind == "f" and not np.isfinite(X).all():
        raise DataError(
            f"the scale reference {path!r} (data.scale_reference) has missing or infinite "
            "values (data.fill_missing fills a table's)"
        )
    mean, std = fit(X)
    std = np.where(std < MIN_STD, 1.0, std)  # as ``Standardized.set``: recorded as used
    return ReferenceStatistics(
        sha256=sha,
        mean=tuple(float(v) for v in mean.ravel()),
        std=tuple(float(v) for v in std.ravel()),
        rows=len(X),
    )
