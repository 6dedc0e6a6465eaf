"""Training sources read in two passes: an index without features, then features in chunks.

Training never needs a whole dataset in one process. The index (IDs, labels, groups:
a few bytes per point) decides each point's side of the split and its shard; the features
then stream through once, chunk by chunk, into each part's data in the store
(``sisa.data.streaming``). A ``.npz`` file is read chunk by chunk out of its archive,
Parquet by row groups (``sisa.data.parquet``), images one file at a time (an image folder,
or a manifest: ``sisa.data.manifest``), and synthetic Purchase is generated chunk by
chunk, so N can be millions. A source that can only be read whole (digits, CSV) is held in
memory by the one process that ingests it.
"""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Iterator
from typing import BinaryIO, Literal

import fsspec
import numpy as np

from sisa.config import BUILTIN_SOURCES, IN_MEMORY, DataConfig
from sisa.data.dataset import DataError, Dataset, first_values
from sisa.data.images import IMAGE_SUFFIXES, ImageFolder
from sisa.data.labels import checked_labeled, fill_features
from sisa.data.loaders import (
    IN_MEMORY_ERROR,
    check_npz_names,
    load_digits_dataset,
    load_file,
    rules,
)
from sisa.data.manifest import ImageManifestSource
from sisa.data.parquet import SUFFIX, ParquetSource, is_table_file
from sisa.data.streaming import (  # re-exported: where callers have found them
    CHUNK_BYTES,
    ContentHash,
    InMemorySource,
    Source,
    SourceIndex,
    chunk_rows,
)

__all__ = [
    "CHUNK_BYTES",
    "ContentHash",
    "ImageFolderSource",
    "ImageManifestSource",
    "InMemorySource",
    "NpzSource",
    "ParquetSource",
    "PurchaseSource",
    "Source",
    "SourceIndex",
    "chunk_rows",
    "folder_kind",
    "is_image_folder",
    "open_source",
    "read_whole",
]


class PurchaseSource:
    """Synthetic Purchase, generated chunk by chunk (``sisa.data.purchase``)."""

    def __init__(self, n: int, seed: int) -> None:
        from sisa.data.purchase import SyntheticPurchase

        try:
            self.generator = SyntheticPurchase(n, seed)
        except ValueError as exc:
            raise DataError(str(exc)) from None

    def index(self) -> SourceIndex:
        gen = self.generator
        shape, labels = (gen.num_features,), gen.labels()
        # the features are a function of (n, seed) and the generator, which the config and
        # the code fix: hashing the generator's parameters stands for generating them twice
        params = f"{gen.n}:{gen.seed}:{gen.num_features}:{gen.num_classes}:{gen.VERSION}"
        content = ContentHash(f"synthetic-purchase:{params}")
        content.index(gen.ids, labels, None)
        digest = content.hexdigest()
        return SourceIndex(
            ids=gen.ids,
            y=labels,
            groups=None,
            num_classes=gen.num_classes,
            feature_shape=shape,
            x_dtype=np.uint8,
            risk=None,
            content_hash=digest,
        )

    def chunks(self, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        return self.generator.chunks(rows or chunk_rows(self.generator.num_features))


class NpzSource:
    """A ``.npz`` file read member by member: IDs, labels and groups whole, then the
    features in row chunks straight out of the archive (stored or compressed), so a file
    larger than memory can be ingested. Checks and dtypes are those of ``load_file``, and
    all of them run in ``index``, over every feature, before a caller writes anything."""

    def __init__(self, path: str, data: DataConfig | int | None) -> None:
        # an int (or None) is ``num_classes`` with the default settings
        self.path = path
        self.data = data if isinstance(data, DataConfig) else rules(data)
        self._index: SourceIndex | None = None
        self._members: dict[str, str] = {}  # array name -> archive member

    def index(self) -> SourceIndex:
        if self._index is None:
            self._index = self._read_index()
        return self._index

    def _read_index(self) -> SourceIndex:
        with self._member_reader() as zf:
            # np.load's naming: a member "X.npy" (or "X") is the array "X"
            self._members = {n.removesuffix(".npy"): n for n in zf.namelist()}
            check_npz_names(set(self._members))
            small = {k: self._read_small(zf, k) for k in self._members if k != "X"}
            with zf.open(self._members["X"]) as member:
                shape, _, dtype = _npy_header(member)
        ids = small["ids"]
        if ids.ndim != 1:
            raise DataError(f"ids must be one-dimensional, got shape {ids.shape}")
        if len(shape) < 2 or shape[0] != len(ids):
            raise DataError(
                f"features must have shape [n, *feature_shape] with n = {len(ids)} IDs, got {shape}"
            )
        if dtype.kind not in "biuf":
            raise DataError(f"features have dtype {dtype}; they must be numeric")
        stub = np.zeros((len(ids), 1), np.uint8)  # the features are scanned below
        ds = checked_labeled(
            ids,
            stub,
            small["y"],
            num_classes=self.data.num_classes,
            declared=self.data.classes,
            groups=small.get("groups"),
            risk=small.get("risk"),
        )
        content = ContentHash("npz")
        content.index(ds.ids, ds.y, ds.groups, ds.risk)
        content.header("X", dtype, shape)
        x_dtype = self._scan_features(dtype, ds.ids, content)
        return SourceIndex.of(ds, feature_shape=tuple(shape[1:]), x_dtype=x_dtype, content=content)

    def _scan_features(self, dtype: np.dtype, ids: np.ndarray, content: ContentHash) -> np.dtype:
        """One pass over every feature: ``load_file``'s dtype rule (binary as uint8;
        integers only if all are 0/1) and its refusal of NaN or infinite values, and the
        content hash. A damaged archive fails here too, so nothing is written from a file
        that cannot be read."""
        lo, hi, bad = 0, 1, []
        for start, raw in self._raw_chunks():
            content.rows(raw)
            X = fill_features(raw, self.data.fill_missing)
            if X.dtype.kind in "iu" and X.size:
                lo, hi = min(lo, int(X.min())), max(hi, int(X.max()))
            elif X.dtype.kind == "f":
                rows = ~np.isfinite(X.reshape(len(X), -1)).all(axis=1)  # [m]
                bad.extend(ids[start : start + len(X)][rows][:5].tolist())
        if bad:
            raise DataError(f"NaN or infinite features at IDs {first_values(bad)}")
        if dtype == np.uint8 or dtype.kind == "b" or (dtype.kind in "iu" and lo >= 0 and hi <= 1):
            return np.dtype(np.uint8)
        return np.dtype(np.float32)

    def chunks(self, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        index = self.index()
        for start, raw in self._raw_chunks(rows):
            filled = fill_features(raw, self.data.fill_missing)
            yield start, filled.astype(index.x_dtype, copy=False)

    def _raw_chunks(self, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """The features as stored, ``rows`` at a time (default: ``CHUNK_BYTES`` worth)."""
        with self._member_reader() as zf, zf.open(self._members["X"]) as member:
            shape, fortran, dtype = _npy_header(member)
            row_bytes = dtype.itemsize * int(np.prod(shape[1:]))
            rows = rows or chunk_rows(row_bytes)
            if fortran:  # columns first: rows cannot be streamed, so read it whole
                data = member.read(row_bytes * shape[0])
                X = np.frombuffer(data, dtype=dtype).reshape(shape, order="F")
                for start in range(0, shape[0], rows):
                    yield start, np.ascontiguousarray(X[start : start + rows])
                return
            for start in range(0, shape[0], rows):
                m = min(rows, shape[0] - start)
                buf = member.read(m * row_bytes)
                if len(buf) != m * row_bytes:
                    raise DataError(f"{self.path!r}: the features end early, at row {start}")
                yield start, np.frombuffer(buf, dtype=dtype).reshape(m, *shape[1:])

    def _read_small(self, zf: zipfile.ZipFile, name: str) -> np.ndarray:
        with zf.open(self._members[name]) as member:
            try:
                return np.lib.format.read_array(member, allow_pickle=False)
            except ValueError as exc:
                raise DataError(f"npz array {name!r} cannot be loaded safely: {exc}") from exc

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


class ImageFolderSource:
    """An image folder (``sisa.data.images``): every image checked by ``index``, pixels
    streamed by ``chunks`` as uint8 [m, C, H, W]."""

    def __init__(self, data: DataConfig) -> None:
        self.folder = ImageFolder(data.source, mode=data.image_mode, size=data.image_size)
        self.declared = data.classes

    def index(self) -> SourceIndex:
        ids, labels, digest = self.folder.digest()
        classes = tuple(self.declared or self.folder.classes)
        unknown = sorted(set(self.folder.classes) - set(classes))
        if unknown:
            raise DataError(
                f"class folders {first_values(unknown)} are not in data.classes {list(classes)}"
            )
        y = np.array([classes.index(name) for name in self.folder.classes])[labels]  # [n]
        return SourceIndex(
            ids=ids,
            y=y.astype(np.int64),
            groups=None,
            num_classes=len(classes),
            feature_shape=self.folder.shape or (),
            x_dtype=np.dtype(np.uint8),
            content_hash=digest,
            classes=classes,
        )

    def chunks(self, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        shape = self.folder.shape or (1,)
        yield from self.folder.chunks(rows or chunk_rows(int(np.prod(shape))))


def folder_kind(source: str) -> Literal["images", "parquet"] | None:
    """What ``data.source`` names, by its content: a folder of images, a folder of Parquet
    files (one table), or None (a file, or a built-in source). A folder holding both is
    refused: which of them the points are would be a guess."""
    if source in BUILTIN_SOURCES or source == IN_MEMORY:
        return None
    fs, path = fsspec.core.url_to_fs(source)
    if not fs.isdir(path):
        return None
    base = path.rstrip("/")
    names = [p[len(base) + 1 :] for p in fs.find(base)]
    tables = [n for n in names if is_table_file(n)]
    images = [n for n in names if n.lower().endswith(IMAGE_SUFFIXES)]
    if tables and images:
        raise DataError(
            f"{source!r} holds both Parquet files ({first_values(tables)}) and images "
            f"({first_values(images)}): a folder source is one or the other"
        )
    return "parquet" if tables else "images"


def is_image_folder(source: str) -> bool:
    """Whether ``data.source`` names an image folder (a folder without Parquet files)."""
    return folder_kind(source) == "images"


def open_source(data: DataConfig, seed: int) -> Source:
    """The source a data config names: ``digits``, ``synthetic-purchase``, an image folder
    or manifest, or a table (``.npz`` and Parquet files and folders streamed; ``.csv``
    read whole)."""
    if data.source == "digits":
        return InMemorySource(load_digits_dataset())
    if data.source == "synthetic-purchase":
        return PurchaseSource(data.n, seed)
    if data.source == IN_MEMORY:
        raise DataError(IN_MEMORY_ERROR)
    if data.image_column is not None:
        return ImageManifestSource(data)
    if data.source.lower().endswith(".npz"):
        return NpzSource(data.source, data)
    kind = folder_kind(data.source)
    if kind == "images":
        return ImageFolderSource(data)
    if kind == "parquet" or data.source.lower().endswith(SUFFIX):
        return ParquetSource(data)
    return InMemorySource(load_file(data.source, data=data))


def read_whole(data: DataConfig, seed: int) -> Dataset:
    """The source as one dataset in memory, as streamed (the same points, checks and
    dtypes as training reads): for the few readers that need the points at hand, such as
    ``sisa evaluate --forgotten``."""
    source = open_source(data, seed)
    if isinstance(source, InMemorySource):
        return source.dataset
    index = source.index()
    X = np.concatenate([X for _, X in source.chunks()])
    return Dataset(
        ids=index.ids,
        X=X,
        y=index.y,
        num_classes=index.num_classes,
        groups=index.groups,
        risk=index.risk,
        classes=index.classes,
    )
