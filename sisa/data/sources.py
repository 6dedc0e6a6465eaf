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
import hashlib
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import fsspec
import numpy as np

from sisa.config import BUILTIN_SOURCES, IN_MEMORY, DataConfig
from sisa.data.dataset import DataError, Dataset, first_values
from sisa.data.images import ImageFolder
from sisa.data.labels import checked_labeled, fill_features
from sisa.data.loaders import (
    IN_MEMORY_ERROR,
    check_npz_names,
    load_digits_dataset,
    load_file,
    rules,
)

CHUNK_BYTES = 32 << 20  # features in flight at once: 55,924 rows of Purchase's 600 bytes


@dataclass(frozen=True, kw_only=True)
class SourceIndex:
    """Everything about a source but its features: enough to split, place and check it."""

    ids: np.ndarray  # [n] int64 or unicode, unique
    y: np.ndarray  # [n] int64 in [0, num_classes)
    groups: np.ndarray | None  # [n] or None
    num_classes: int
    feature_shape: tuple[int, ...]
    x_dtype: np.dtype
    risk: np.ndarray | None = None  # [n] float64 deletion probabilities, or None
    content_hash: str = ""  # sha256 of every stored column (``ContentHash``)
    classes: tuple[str | int, ...] | None = None  # the label vocabulary, or None (integers)

    def __len__(self) -> int:
        return int(self.ids.shape[0])


class ContentHash:
    """sha256 of every column a source stores (IDs, labels, groups, risk, features), in
    source order. An interrupted training resumes only over the same content: a source
    whose labels or features changed under the same IDs must not be mixed with the parts
    committed from the old one."""

    def __init__(self, kind: str) -> None:
        self._sha = hashlib.sha256(f"sisa-source:{kind}".encode())

    def header(self, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self._sha.update(f"|{name}:{np.dtype(dtype).str}:{tuple(shape)}|".encode())

    def rows(self, values: np.ndarray) -> None:
        """Bytes of consecutive rows, after their ``header``: chunking does not matter."""
        self._sha.update(np.ascontiguousarray(values).tobytes())

    def array(self, name: str, values: np.ndarray | None) -> None:
        if values is not None:
            self.header(name, values.dtype, values.shape)
            self.rows(values)

    def index(self, ids: np.ndarray, y: np.ndarray, groups: np.ndarray | None, risk=None) -> None:
        for name, values in (("ids", ids), ("y", y), ("groups", groups), ("risk", risk)):
            self.array(name, values)

    def vocabulary(self, classes: tuple[str | int, ...] | None) -> None:
        """The class names, when there are any: renaming a class changes the content.
        Integer labels without a vocabulary hash as they did before vocabularies."""
        if classes is not None:
            self._sha.update(f"|classes:{json.dumps(list(classes))}|".encode())

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


class Source(Protocol):
    """A validated dataset that can be read without holding its features at once."""

    def index(self) -> SourceIndex: ...

    def chunks(self, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, X[start:start + rows])`` for consecutive row ranges, in order;
        ``rows`` defaults to ``CHUNK_BYTES`` worth of features."""
        ...


class InMemorySource:
    """A dataset already loaded (and validated) in this process."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def index(self) -> SourceIndex:
        ds = self.dataset
        content = ContentHash("in-memory")
        content.index(ds.ids, ds.y, ds.groups, ds.risk)
        content.array("X", ds.X)
        content.vocabulary(ds.classes)
        return SourceIndex(
            ids=ds.ids,
            y=ds.y,
            groups=ds.groups,
            num_classes=ds.num_classes,
            feature_shape=ds.feature_shape,
            x_dtype=ds.X.dtype,
            risk=ds.risk,
            content_hash=content.hexdigest(),
            classes=ds.classes,
        )

    def chunks(self, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        X = self.dataset.X
        rows = rows or chunk_rows(X[0].nbytes if len(X) else 1)
        for start in range(0, len(self.dataset), rows):
            yield start, self.dataset.X[start : start + rows]


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
        content.vocabulary(ds.classes)
        shape = tuple(shape[1:])
        digest = content.hexdigest()
        return SourceIndex(
            ids=ds.ids,
            y=ds.y,
            groups=ds.groups,
            num_classes=ds.num_classes,
            feature_shape=shape,
            x_dtype=x_dtype,
            risk=ds.risk,
            content_hash=digest,
            classes=ds.classes,
        )

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


def chunk_rows(row_bytes: int) -> int:
    """Rows of features per chunk: ``CHUNK_BYTES`` worth, however wide a row is."""
    return max(1, CHUNK_BYTES // max(1, row_bytes))


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


def is_image_folder(source: str) -> bool:
    """Whether ``data.source`` names a folder (an image folder; files are tables or arrays)."""
    if source in BUILTIN_SOURCES or source == IN_MEMORY:
        return False
    fs, path = fsspec.core.url_to_fs(source)
    return bool(fs.isdir(path))


def open_source(data: DataConfig, seed: int) -> Source:
    """The source a data config names: ``digits``, ``synthetic-purchase``, an image folder,
    or a file (``.npz`` streamed; ``.csv`` and ``.parquet`` read whole)."""
    if data.source == "digits":
        return InMemorySource(load_digits_dataset())
    if data.source == "synthetic-purchase":
        return PurchaseSource(data.n, seed)
    if data.source == IN_MEMORY:
        raise DataError(IN_MEMORY_ERROR)
    if data.source.lower().endswith(".npz"):
        return NpzSource(data.source, data)
    if is_image_folder(data.source):
        return ImageFolderSource(data)
    return InMemorySource(load_file(data.source, data=data))
