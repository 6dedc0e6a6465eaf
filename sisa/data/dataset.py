"""Datasets keyed by point ID: validation and the per-ID train/test split.

Every point carries a stable, unique ID and everything downstream is keyed by it, never by
row position. Loaders (``sisa.data.loaders``) validate eagerly so that a bad file fails
there, with the offending IDs named, rather than deep inside training. The train/test side
of a point is a keyed hash of its own ID, or with groups of its group (so one group's
points are never on both sides), so erasing one point never moves another across the
split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sisa.ids import as_id_array, fingerprints, unit_interval

_MAX_EXAMPLES = 5
_CHUNK = 32_768  # rows per chunk where a whole-matrix temporary would be too large
NPZ_REQUIRED = ("ids", "X", "y")
NPZ_OPTIONAL = ("groups", "risk")


class DataError(ValueError):
    """A problem with input data; the message names the problem and the offending points."""


def first_values(values: Sequence[object] | np.ndarray) -> str:
    """At most a few examples plus a count, so messages stay readable on huge inputs."""
    items = list(values[:_MAX_EXAMPLES])
    text = ", ".join(repr(v.item() if isinstance(v, np.generic) else v) for v in items)
    if len(values) > _MAX_EXAMPLES:
        text += f", ... ({len(values)} in all)"
    return text


def read_recorded(path: str, what: str, expected_sha256: str | None, why: str) -> tuple[bytes, str]:
    """The bytes of a file a store records by its sha256 (a tokenizer, a category
    reference), with that sha256; with ``expected_sha256`` (the store's record), a file
    whose bytes changed since training is refused, saying ``why`` that matters."""
    import hashlib

    import fsspec

    try:
        with fsspec.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"no such {what} file: {path!r}") from None
    sha = hashlib.sha256(raw).hexdigest()
    if expected_sha256 is not None and sha != expected_sha256:
        raise DataError(
            f"the {what} {path!r} changed since this store trained (sha256 {sha[:12]}, "
            f"recorded {expected_sha256[:12]}): {why}; restore the original file"
        )
    return raw, sha


@dataclass(kw_only=True, frozen=True, eq=False)
class Dataset:
    """Points with IDs, features, labels, optional groups and deletion risks, by row.

    Equality compares every array exactly (dtype, shape and values); the dataclass default
    would compare arrays elementwise and fail with an ambiguous truth value.
    """

    ids: np.ndarray  # [n] int64 or unicode, unique
    X: np.ndarray  # [n, *feature_shape] float32, or uint8 for binary features
    y: np.ndarray  # [n] int64 in [0, num_classes)
    num_classes: int
    groups: np.ndarray | None = None  # [n] int64 or unicode; points erased together
    risk: np.ndarray | None = None  # [n] float64 in [0, 1]; probability of deletion
    # the label vocabulary: y[i] is class classes[y[i]]; None for integer labels as they are
    classes: tuple[str | int, ...] | None = None

    __hash__ = None  # type: ignore[assignment]  # arrays are mutable

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Dataset):
            return NotImplemented
        mine, theirs = self.to_arrays(), other.to_arrays()
        if self.num_classes != other.num_classes or set(mine) != set(theirs):
            return False
        if self.classes != other.classes:
            return False
        return all(
            mine[k].dtype == theirs[k].dtype and np.array_equal(mine[k], theirs[k]) for k in mine
        )

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.X.shape[1:])

    def take(self, index: np.ndarray) -> Dataset:
        """Rows by integer index or boolean mask; IDs, labels and groups stay aligned."""
        index = np.asarray(index)
        return Dataset(
            ids=self.ids[index],
            X=self.X[index],
            y=self.y[index],
            num_classes=self.num_classes,
            groups=None if self.groups is None else self.groups[index],
            risk=None if self.risk is None else self.risk[index],
            classes=self.classes,
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for storage; ``from_arrays`` is the inverse."""
        arrays = {"ids": self.ids, "X": self.X, "y": self.y}
        if self.groups is not None:
            arrays["groups"] = self.groups
        if self.risk is not None:
            arrays["risk"] = self.risk
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], num_classes: int) -> Dataset:
        """Build and validate a dataset from ``to_arrays`` output."""
        missing = [k for k in NPZ_REQUIRED if k not in arrays]
        if missing:
            raise DataError(f"missing arrays: {', '.join(missing)}")
        extra = sorted(set(arrays) - set(NPZ_REQUIRED) - set(NPZ_OPTIONAL))
        if extra:
            known = ", ".join(NPZ_REQUIRED + NPZ_OPTIONAL)
            raise DataError(f"unknown arrays: {', '.join(extra)} (expected {known})")
        return checked_arrays(arrays, num_classes)


def _id_array(values: np.ndarray, what: str) -> np.ndarray:
    """IDs (or groups) as int64 or unicode; floats, bools and mixtures are rejected."""
    values = np.asarray(values)
    if values.dtype.kind in "bfc":
        raise DataError(f"{what} have dtype {values.dtype}; they must be integers or strings")
    try:
        return as_id_array(values)
    except (TypeError, ValueError) as exc:
        raise DataError(f"bad {what}: {exc}") from exc


def _features(X: np.ndarray) -> np.ndarray:
    """Features as uint8 when binary (8x smaller than float32), int32 token IDs as they are
    (``sisa.data.text``), else float32."""
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise DataError(f"features have dtype {X.dtype}; they must be numeric")
    if X.dtype == np.uint8:
        return X
    if X.dtype.kind == "b" or (X.dtype.kind in "iu" and X.size and X.min() >= 0 and X.max() <= 1):
        return X.astype(np.uint8)
    return X if X.dtype == np.int32 else X.astype(np.float32)


def validate(ds: Dataset, *, allow_empty: bool = False) -> Dataset:
    """Check a dataset and return it with canonical dtypes, or raise ``DataError``.

    Every loader calls this, so training code may rely on unique IDs, finite features and
    labels in range. ``allow_empty`` exists for split sides, which may legitimately be empty.
    """
    y = np.asarray(ds.y)
    X = np.asarray(ds.X)
    if np.asarray(ds.ids).ndim != 1:
        raise DataError(f"ids must be one-dimensional, got shape {np.shape(ds.ids)}")
    if y.ndim != 1:
        raise DataError(f"labels must be one-dimensional, got shape {y.shape}")
    n = np.shape(ds.ids)[0]
    if X.ndim < 2:
        raise DataError(f"features must have shape [n, *feature_shape], got {X.shape}")
    lengths = {"ids": n, "X": X.shape[0], "y": y.shape[0]}
    for name, extra in (("groups", ds.groups), ("risk", ds.risk)):
        if extra is not None:
            lengths[name] = np.shape(extra)[0] if np.ndim(extra) == 1 else -1
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise DataError(f"ragged arrays: row counts differ ({shown}; -1 means not 1-D)")
    if n == 0 and not allow_empty:
        raise DataError("empty data: no points")
    ids = _id_array(ds.ids, "IDs")
    uniq, counts = np.unique(ids, return_counts=True)
    if uniq.shape[0] != n:
        dups = uniq[counts > 1]
        raise DataError(f"duplicate IDs: {first_values(dups)}")
    y = _labels(y, ids)
    if isinstance(ds.num_classes, bool) or not isinstance(ds.num_classes, int | np.integer):
        raise DataError(f"num_classes must be an int, got {ds.num_classes!r}")
    if ds.num_classes < 2:
        raise DataError(f"num_classes must be at least 2, got {ds.num_classes}")
    bad = (y < 0) | (y >= ds.num_classes)  # [n] bool
    if bad.any():
        raise DataError(
            f"labels out of range [0, {ds.num_classes}) at IDs {first_values(ids[bad])}: "
            f"values {first_values(y[bad])}"
        )
    X = _features(X)
    if X.dtype.kind == "f":
        flat = X.reshape(n, int(np.prod(X.shape[1:])))  # [n, d] view
        bad = np.zeros(n, dtype=bool)  # [n]
        for s in range(0, n, _CHUNK):
            bad[s : s + _CHUNK] = ~np.isfinite(flat[s : s + _CHUNK]).all(axis=1)
        if bad.any():
            raise DataError(
                f"NaN or infinite features at IDs {first_values(ids[bad])} (data.fill_missing "
                "fills missing values with a constant)"
            )
    groups = None if ds.groups is None else _id_array(ds.groups, "groups")
    risk = None if ds.risk is None else risk_values(ds.risk, ids, "risk")
    if ds.classes is not None and len(ds.classes) != ds.num_classes:
        raise DataError(f"{len(ds.classes)} class names for num_classes = {ds.num_classes}")
    return Dataset(
        ids=ids,
        X=X,
        y=y,
        num_classes=int(ds.num_classes),
        groups=groups,
        risk=risk,
        classes=ds.classes,
    )


def risk_values(values: np.ndarray, ids: np.ndarray, what: str) -> np.ndarray:
    """Deletion probabilities as float64 in [0, 1], or ``DataError`` naming the IDs."""
    values = np.asarray(values)
    if values.dtype.kind not in "iuf":
        raise DataError(f"{what} has dtype {values.dtype}; it must be numbers in [0, 1]")
    values = values.astype(np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (values < 0) | (values > 1)  # [n] bool
    if bad.any():
        raise DataError(
            f"{what} outside [0, 1] (or missing) at IDs {first_values(ids[bad])}: "
            f"values {first_values(values[bad])}"
        )
    return values


def _labels(y: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Labels as int64; float labels are accepted only when integral (e.g. read from CSV)."""
    if y.dtype.kind in "iu":
        return y.astype(np.int64)
    if y.dtype.kind != "f":
        raise DataError(f"labels have dtype {y.dtype}; they must be integers")
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(y) | (y != np.floor(y))  # [n] bool
    if bad.any():
        raise DataError(
            f"labels that are not integers at IDs {first_values(ids[bad])}: "
            f"values {first_values(y[bad])}"
        )
    return y.astype(np.int64)


def checked_index(
    ids: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    num_classes: int | None,
    groups: np.ndarray | None,
    risk: np.ndarray | None = None,
    classes: tuple[str | int, ...] | None = None,
) -> Dataset:
    """Infer ``num_classes`` when not given, then validate (``X`` may be a one-column
    stand-in where the caller checks the real features itself). ``y`` are class indices
    here; ``sisa.data.labels`` maps other labels through ``classes`` first."""
    if num_classes is None:
        y_arr = np.asarray(y)
        finite = y_arr[np.isfinite(y_arr)] if y_arr.dtype.kind == "f" else y_arr
        ok = y_arr.dtype.kind in "iuf" and finite.size > 0
        num_classes = int(np.floor(finite.max())) + 1 if ok else 0
    ds = Dataset(
        ids=ids, X=X, y=y, num_classes=num_classes, groups=groups, risk=risk, classes=classes
    )
    return validate(ds)


def checked_arrays(arrays: dict[str, np.ndarray], num_classes: int | None) -> Dataset:
    """``checked_index`` of arrays named as stored (``ids``, ``X``, ``y``, ``groups``...)."""
    names = ("ids", "X", "y")
    return checked_index(
        *(arrays[k] for k in names), num_classes, arrays.get("groups"), arrays.get("risk")
    )


def split_rule(setting: str, has_groups: bool) -> str:
    """The split a training uses: ``data.split``, where ``auto`` is by group when the data
    has groups (a person's points all on one side), else by ID."""
    if setting == "group" and not has_groups:
        raise DataError("data.split = 'group', but the data has no groups")
    if setting == "auto":
        return "group" if has_groups else "id"
    return setting


def split_train_test(
    ds: Dataset, seed: int, test_fraction: float, rule: str = "id", secret: bytes | None = None
) -> tuple[Dataset, Dataset]:
    """Split by a keyed hash of each ID (or group, ``rule``), so a point's side never
    depends on other points.

    Each side keeps the original relative order; either side may be empty.
    """
    keys = ds.groups if rule == "group" else ds.ids
    is_test = split_mask(keys, seed, test_fraction, rule, secret)  # [n]
    return ds.take(~is_test), ds.take(is_test)


def split_mask(
    ids: np.ndarray, seed: int, test_fraction: float, rule: str = "id", secret: bytes | None = None
) -> np.ndarray:
    """[n] bool: which points are held out, each by a keyed hash of its key alone: its ID,
    or under the ``group`` rule its group (so ``ids`` are then the groups); ``secret`` is
    the store's placement key (``sisa.data.partition.assign``)."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if rule not in ("id", "group"):
        raise ValueError(f"split rule must be 'id' or 'group', got {rule!r}")
    if ids is None:
        raise DataError("the group split needs groups; the data has none")
    context = "test-split" if rule == "id" else "test-split-group"
    return unit_interval(fingerprints(ids), seed, context, secret=secret) < test_fraction
