"""Training sources read in two passes: an index without features, then features in chunks.

Training never needs a whole dataset in one process. The index (IDs, labels, groups:
a few bytes per point) decides each point's side of the split and its shard; the features
then stream through once, chunk by chunk, into each part's data in the store. A source
that can only be read whole (digits, CSV, Parquet) is held in memory by the one process
that ingests it; synthetic Purchase is generated chunk by chunk, so N can be millions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sisa.config import DataConfig
from sisa.data import DataError, Dataset, load_digits_dataset, load_file

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


def open_source(data: DataConfig, seed: int) -> Source:
    """The source a data config names: ``digits``, ``synthetic-purchase``, or a file."""
    if data.source == "digits":
        return InMemorySource(load_digits_dataset())
    if data.source == "synthetic-purchase":
        return PurchaseSource(data.n, seed)
    return InMemorySource(load_file(data.source, data.num_classes))
