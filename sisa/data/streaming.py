"""What every training source gives: an index without features, then features in chunks.

A source (``Source``) is read in two passes. ``index`` returns a ``SourceIndex``: the IDs,
labels, groups and risks (a few bytes per point), which decide each point's side of the
split and its shard, with the content hash of every stored column and the features' shape
and dtype. ``chunks`` then streams the features through once, in row order. Data already
in memory is ``InMemorySource``; the others are in ``sisa.data.sources``,
``sisa.data.parquet`` and ``sisa.data.manifest``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sisa.data.dataset import Dataset

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

    @classmethod
    def of(
        cls,
        ds: Dataset,
        *,
        feature_shape: tuple[int, ...],
        x_dtype: np.dtype,
        content: ContentHash,
    ) -> SourceIndex:
        """The index of a checked dataset (its features stubbed or whole) whose features
        have this shape and dtype; the vocabulary closes the content hash."""
        content.vocabulary(ds.classes)
        return cls(
            ids=ds.ids,
            y=ds.y,
            groups=ds.groups,
            num_classes=ds.num_classes,
            feature_shape=tuple(feature_shape),
            x_dtype=np.dtype(x_dtype),
            risk=ds.risk,
            content_hash=content.hexdigest(),
            classes=ds.classes,
        )


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


def chunk_rows(row_bytes: int) -> int:
    """Rows of features per chunk: ``CHUNK_BYTES`` worth, however wide a row is."""
    return max(1, CHUNK_BYTES // max(1, row_bytes))


class InMemorySource:
    """A dataset already loaded (and validated) in this process."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def index(self) -> SourceIndex:
        ds = self.dataset
        content = ContentHash("in-memory")
        content.index(ds.ids, ds.y, ds.groups, ds.risk)
        content.array("X", ds.X)
        return SourceIndex.of(
            ds, feature_shape=ds.feature_shape, x_dtype=ds.X.dtype, content=content
        )

    def chunks(self, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        X = self.dataset.X
        rows = rows or chunk_rows(X[0].nbytes if len(X) else 1)
        for start in range(0, len(self.dataset), rows):
            yield start, self.dataset.X[start : start + rows]
