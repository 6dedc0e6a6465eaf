"""Parquet streamed by row group: a table larger than memory can be ingested.

The index pass reads only the ID, label, group and risk columns (``columns=``); the
features are then read a batch of rows at a time (``ParquetFile.iter_batches``), each
batch turned into features by the same functions as a table read whole
(``sisa.data.columns``). Every check of the whole-table reading runs in ``index``, over
every row, before a caller writes anything.

A batch's features are bitwise those of the same rows of the whole table. Two things could
tell them apart, and both are settled from the whole file first: the dtypes pandas gives a
column (an integer column with a missing value anywhere is float64 when read whole, so it
is float64 in every batch; the row groups' statistics say where values are missing), and
the uint8-or-float32 choice (uint8 only when every batch is 0/1 integers, as for the whole).

A folder of Parquet files is one table: its ``*.parquet`` files below it in sorted path
order, as pyarrow datasets read them, skipping names that start with ``.`` or ``_``
(``_SUCCESS``, ``.crc`` files). Every file must have the first one's columns and types.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np

from sisa.config import DataConfig
from sisa.data.columns import (
    feature_names,
    frame_index,
    index_columns,
    table_features,
    text_features,
)
from sisa.data.dataset import DataError, first_values
from sisa.data.labels import checked_labeled
from sisa.data.streaming import CHUNK_BYTES, ContentHash, SourceIndex

if TYPE_CHECKING:  # pandas and pyarrow are imported when a table is read
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

SUFFIX = ".parquet"


def is_table_file(rel: str) -> bool:
    """Whether a path below a folder is one of its Parquet files (not hidden, not ``_*``)."""
    parts = rel.split("/")
    return rel.lower().endswith(SUFFIX) and not any(p.startswith((".", "_")) for p in parts)


def parquet_files(source: str) -> tuple[Any, list[str]]:
    """(filesystem, paths) of a Parquet source: the file itself, or a folder's tables in
    sorted path order."""
    fs, path = fsspec.core.url_to_fs(source)
    if not fs.isdir(path):
        return fs, [path]
    base = path.rstrip("/")
    found = [p for p in sorted(fs.find(base)) if is_table_file(p[len(base) + 1 :])]
    if not found:
        raise DataError(f"no {SUFFIX} files in {source!r}")
    return fs, found


class ParquetSource:
    """A Parquet file or folder read as a source: the index columns whole, the features a
    batch of rows at a time, with the column mapping and checks of ``sisa.data.columns``."""

    def __init__(self, data: DataConfig) -> None:
        self.data = data
        self._fs, self._paths = parquet_files(data.source)
        self._index: SourceIndex | None = None
        self._columns: list[str] = []  # what the features are made of, in table order
        self._dtypes: dict[str, Any] = {}  # column -> its dtype in the whole table, if other

    def index(self) -> SourceIndex:
        if self._index is None:
            self._index = self._read_index()
        return self._index

    def _read_index(self) -> SourceIndex:
        import pyarrow as pa

        data = self.data
        schema, nulls = self._schema()
        probe = _probe(schema, nulls)  # no rows, the whole table's dtypes
        wanted = index_columns(probe, data)
        if data.text_column is not None:
            text_features(probe, data)  # the column and the tokenizer, checked now
            self._columns = [data.text_column]
        else:
            self._columns = feature_names(probe, data)
        # only a column with a missing value somewhere reads otherwise batch by batch
        self._dtypes = {c: probe[c].dtype for c in self._columns if c in nulls}
        with self._opened() as files:
            table = pa.concat_tables([pf.read(columns=wanted) for pf in files])
        if table.num_rows == 0:
            raise DataError("empty data: the table has no rows")
        ids, y, groups, risk = frame_index(table.to_pandas(), data, from_text=False)
        del table
        stub = np.zeros((len(ids), 1), np.uint8)  # the features are scanned below
        ds = checked_labeled(
            ids,
            stub,
            y,
            num_classes=data.num_classes,
            declared=data.classes,
            groups=groups,
            risk=risk,
        )
        content = ContentHash("parquet")
        content.index(ds.ids, ds.y, ds.groups, ds.risk)
        shape, x_dtype = self._scan(ds.ids, content)
        content.header("X", x_dtype, (len(ds.ids), *shape))
        return SourceIndex.of(ds, feature_shape=shape, x_dtype=x_dtype, content=content)

    def _scan(self, ids: np.ndarray, content: ContentHash) -> tuple[tuple[int, ...], np.dtype]:
        """One pass over every feature: the shape, the dtype (uint8 when every batch is 0/1
        integers, int32 token IDs, else float32), NaN or infinite values refused, and the
        content hash (of the float32 or int32 values, so the batching does not matter)."""
        shape: tuple[int, ...] | None = None
        binary, bad, rows = True, [], 0
        for start, X in self._features():
            if shape is not None and X.shape[1:] != shape:
                raise DataError(f"rows from {start} have features of shape {X.shape[1:]}")
            shape, rows = X.shape[1:], start + len(X)
            binary &= X.dtype == np.uint8
            wide = X if X.dtype == np.int32 else X.astype(np.float32, copy=False)
            content.rows(wide)
            if wide.dtype.kind == "f":
                finite = np.isfinite(wide.reshape(len(wide), -1)).all(axis=1)  # [m]
                bad.extend(ids[start : start + len(X)][~finite][:5].tolist())
        if rows != len(ids) or shape is None:
            raise DataError(f"{self.data.source!r} changed while it was read")
        if bad:
            raise DataError(
                f"NaN or infinite features at IDs {first_values(bad)} (data.fill_missing "
                "fills missing values with a constant)"
            )
        if self.data.text_column is not None:
            return shape, np.dtype(np.int32)
        return shape, np.dtype(np.uint8 if binary else np.float32)

    def chunks(self, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        index = self.index()
        for start, X in self._features(rows):
            yield start, X.astype(index.x_dtype, copy=False)

    def _features(self, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, features)`` of consecutive batches of at most ``rows`` rows (default:
        ``CHUNK_BYTES`` of the float64 columns pandas holds), file after file."""
        data, start = self.data, 0
        rows = rows or max(1, CHUNK_BYTES // (8 * len(self._columns)))
        with self._opened() as files:
            for batch in (b for pf in files for b in _batches(pf, rows, self._columns)):
                frame = batch.to_pandas()
                for c, dtype in self._dtypes.items():
                    if frame[c].dtype != dtype:  # as the whole table has it
                        frame[c] = frame[c].astype(dtype)
                if data.text_column is not None:
                    X = text_features(frame, data)
                else:
                    X = table_features(frame, data)
                yield start, X
                start += batch.num_rows

    def _schema(self) -> tuple[pa.Schema, set[str]]:
        """The first file's schema (every file must have it) and the integer and boolean
        columns with a missing value in any file: pandas reads those as float64 or object."""
        import pyarrow as pa

        first: pa.Schema | None = None
        nulls: set[str] = set()
        with self._opened() as files:
            for path, pf in zip(self._paths, files, strict=True):
                schema = pf.schema_arrow
                if first is None:
                    first = schema
                elif not schema.equals(first, check_metadata=False):
                    raise DataError(
                        f"{path!r} has other columns or types than {self._paths[0]!r}: every "
                        "file of a Parquet folder must have the same schema"
                    )
                kinds = (pa.types.is_integer, pa.types.is_boolean)
                for name in schema.names:
                    if any(k(schema.field(name).type) for k in kinds) and _has_nulls(pf, name):
                        nulls.add(name)
        assert first is not None  # parquet_files never gives no file
        return first, nulls

    @contextlib.contextmanager
    def _opened(self) -> Iterator[Iterator[pq.ParquetFile]]:
        """The files as ``ParquetFile``s, opened one at a time as the caller walks them."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        def walk() -> Iterator[pq.ParquetFile]:
            for path in self._paths:
                with self._fs.open(path, "rb") as f:
                    yield pq.ParquetFile(f)

        try:
            yield walk()
        except DataError:
            raise
        except FileNotFoundError as exc:
            raise DataError(f"no such file: {self.data.source!r}") from exc
        except (ValueError, OSError, pa.ArrowException) as exc:
            raise DataError(f"cannot read {self.data.source!r}: {exc}") from exc


def _batches(pf: pq.ParquetFile, rows: int, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The row groups one at a time, each in batches of at most ``rows`` rows. Asked for
    the whole file, pyarrow reads row groups ahead (four times the memory of one group at a
    time, ``benchmarks/parquet_memory.py``); one group is what the file's writer chose."""
    for group in range(pf.num_row_groups):
        for batch in pf.iter_batches(batch_size=rows, row_groups=[group], columns=columns):
            if batch.num_rows:
                yield batch


def _has_nulls(pf: pq.ParquetFile, name: str) -> bool:
    """Whether a top-level column has a missing value: from the row groups' statistics,
    or by reading the column where a row group has none."""
    md = pf.metadata
    leaf = next(j for j in range(md.num_columns) if md.schema.column(j).path == name)
    for i in range(md.num_row_groups):
        stats = md.row_group(i).column(leaf).statistics
        if stats is not None and stats.has_null_count:
            count = stats.null_count
        else:
            count = pf.read_row_group(i, columns=[name]).column(0).null_count
        if count:
            return True
    return False


def _probe(schema: pa.Schema, nulls: set[str]) -> pd.DataFrame:
    """A frame of no rows with the columns and dtypes pandas gives the whole table (index
    columns that pandas wrote are its index, as when read whole)."""
    import pyarrow as pa

    probe = schema.empty_table().to_pandas()
    for name in nulls & set(probe.columns):
        field = schema.field(name)
        one = pa.table([pa.nulls(1, field.type)], schema=pa.schema([field], schema.metadata))
        probe[name] = probe[name].astype(one.to_pandas()[name].dtype)
    return probe
