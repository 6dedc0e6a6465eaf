"""Training sources read in two passes: an index without features, then features in chunks.

Training never needs a whole dataset in one process. The index (IDs, labels, groups:
a few bytes per point) decides each point's side of the split and its shard; the features
then stream through once, chunk by chunk, into each part's data in the store. A source
that can only be read whole (digits, CSV, Parquet) is held in memory by the one process
that ingests it; a ``.npz`` file is read chunk by chunk out of its archive, and synthetic
Purchase is generated chunk by chunk, so N can be millions.
"""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import fsspec
import numpy as np

from sisa.config import DataConfig
from sisa.data import (
    DataError,
    Dataset,
    _examples,
    check_npz_names,
    checked_index,
    load_digits_dataset,
    load_file,
)

BUILTIN_SOURCES = ("digits", "synthetic-purchase")
CHUNK_ROWS = 65_536  # rows of features in flight at once (39 MB of Purchase's 600 bits)


@dataclass(frozen=True)
class SourceIndex:
    """Everything about a source but its features: enough to split, place and check it."""

    ids: np.ndarray  # [n] int64 or unicode, unique
    y: np.ndarray  # [n] int64 in [0, num_classes)
    groups: np.ndarray | None  # [n] or None
    num_classes: int
    feature_shape: tuple[int, ...]
    x_dtype: np.dtype
    risk: np.ndarray | None = None  # [n] float64 deletion probabilities, or None

    def __len__(self) -> int:
        return int(self.ids.shape[0])


class Source(Protocol):
    """A validated dataset that can be read without holding its features at once."""

    def index(self) -> SourceIndex: ...

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, X[start:start + rows])`` for consecutive row ranges, in order."""
        ...


class InMemorySource:
    """A dataset already loaded (and validated) in this process."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def index(self) -> SourceIndex:
        ds = self.dataset
        return SourceIndex(ds.ids, ds.y, ds.groups, ds.num_classes, ds.feature_shape, ds.X.dtype)

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, len(self.dataset), rows):
            yield start, self.dataset.X[start : start + rows]


class PurchaseSource:
    """Synthetic Purchase, generated chunk by chunk (``sisa.purchase``)."""

    def __init__(self, n: int, seed: int) -> None:
        from sisa.purchase import SyntheticPurchase

        try:
            self.generator = SyntheticPurchase(n, seed)
        except ValueError as exc:
            raise DataError(str(exc)) from None

    def index(self) -> SourceIndex:
        gen = self.generator
        shape = (gen.num_features,)
        return SourceIndex(gen.ids, gen.labels(), None, gen.num_classes, shape, np.dtype(np.uint8))

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        return self.generator.chunks(rows)


class NpzSource:
    """A ``.npz`` file read member by member: IDs, labels and groups whole, then the
    features in row chunks straight out of the archive (stored or compressed), so a file
    larger than memory can be ingested. Checks and dtypes are those of ``load_file``."""

    def __init__(self, path: str, num_classes: int | None) -> None:
        self.path, self.num_classes = path, num_classes
        self._index: SourceIndex | None = None

    def index(self) -> SourceIndex:
        if self._index is None:
            self._index = self._read_index()
        return self._index

    def _read_index(self) -> SourceIndex:
        with self._member_reader() as zf:
            names = {n[: -len(".npy")] for n in zf.namelist() if n.endswith(".npy")}
            check_npz_names(names)
            small = {k: _read_member(zf, k) for k in names if k != "X"}
            with zf.open("X.npy") as member:
                shape, _, dtype = _npy_header(member)
        if len(shape) < 2 or shape[0] != len(small["ids"]):
            raise DataError(
                f"features must have shape [n, *feature_shape] with n = {len(small['ids'])} "
                f"IDs, got {shape}"
            )
        if dtype.kind not in "biuf":
            raise DataError(f"features have dtype {dtype}; they must be numeric")
        labels = small["y"]
        stub = np.zeros((len(small["ids"]), 1), np.uint8)  # the features are checked per chunk
        ds = checked_index(
            small["ids"], stub, labels, self.num_classes, small.get("groups"), small.get("risk")
        )
        x_dtype = self._feature_dtype(dtype)
        shape = tuple(shape[1:])
        return SourceIndex(ds.ids, ds.y, ds.groups, ds.num_classes, shape, x_dtype, ds.risk)

    def _feature_dtype(self, dtype: np.dtype) -> np.dtype:
        """``load_file``'s rule: binary features as uint8 (integers only if all are 0/1)."""
        if dtype == np.uint8 or dtype.kind == "b":
            return np.dtype(np.uint8)
        if dtype.kind in "iu":
            lo, hi = 0, 1
            for _, X in self._raw_chunks(CHUNK_ROWS):
                if X.size:
                    lo, hi = min(lo, int(X.min())), max(hi, int(X.max()))
            if lo >= 0 and hi <= 1:
                return np.dtype(np.uint8)
        return np.dtype(np.float32)

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        index = self.index()
        for start, raw in self._raw_chunks(rows):
            X = raw.astype(index.x_dtype, copy=False)
            if X.dtype.kind == "f":
                bad = ~np.isfinite(X.reshape(len(X), -1)).all(axis=1)  # [m]
                if bad.any():
                    where = index.ids[start : start + len(X)][bad]
                    raise DataError(f"NaN or infinite features at IDs {_examples(where)}")
            yield start, X

    def _raw_chunks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        with self._member_reader() as zf, zf.open("X.npy") as member:
            shape, fortran, dtype = _npy_header(member)
            if fortran:  # columns first: rows cannot be streamed, so read it whole
                X = np.lib.format.read_array(zf.open("X.npy"), allow_pickle=False)
                for start in range(0, shape[0], rows):
                    yield start, np.ascontiguousarray(X[start : start + rows])
                return
            row_bytes = dtype.itemsize * int(np.prod(shape[1:]))
            for start in range(0, shape[0], rows):
                m = min(rows, shape[0] - start)
                buf = member.read(m * row_bytes)
                if len(buf) != m * row_bytes:
                    raise DataError(f"{self.path!r}: the features end early, at row {start}")
                yield start, np.frombuffer(buf, dtype=dtype).reshape(m, *shape[1:])

    @contextlib.contextmanager
    def _member_reader(self) -> Iterator[zipfile.ZipFile]:
        try:
            with fsspec.open(self.path, "rb") as f, zipfile.ZipFile(f) as zf:
                yield zf
        except DataError:
            raise
        except FileNotFoundError as exc:
            raise DataError(f"no such file: {self.path!r}") from exc
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise DataError(f"cannot read {self.path!r}: {exc}") from exc


def _npy_header(member: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of the ``.npy`` stream, positioned at its data."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
    if dtype.hasobject:
        raise DataError("npz array holds Python objects; it cannot be loaded safely")
    return tuple(shape), bool(fortran), dtype


def _read_member(zf: zipfile.ZipFile, name: str) -> np.ndarray:
    with zf.open(f"{name}.npy") as member:
        try:
            return np.lib.format.read_array(member, allow_pickle=False)
        except ValueError as exc:
            raise DataError(f"npz array {name!r} cannot be loaded safely: {exc}") from exc


def open_source(data: DataConfig, seed: int) -> Source:
    """The source a data config names: ``digits``, ``synthetic-purchase``, or a file
    (``.npz`` streamed; ``.csv`` and ``.parquet`` read whole)."""
    if data.source == "digits":
        return InMemorySource(load_digits_dataset())
    if data.source == "synthetic-purchase":
        return PurchaseSource(data.n, seed)
    if data.source.lower().endswith(".npz"):
        return NpzSource(data.source, data.num_classes)
    return InMemorySource(load_file(data.source, data.num_classes))
