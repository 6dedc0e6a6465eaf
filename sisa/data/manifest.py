"""Images named by a manifest: a CSV or Parquet table with a column of image paths.

Where an image folder takes IDs from paths and labels from folders, a manifest says them:
the ID, label, group and risk columns of the table (``data.id_column`` ...), and the image
of each row in ``data.image_column``, a path relative to the manifest's folder (or
absolute, on the manifest's filesystem). Images are decoded exactly as an image folder's
(``sisa.data.images``: ``data.image_mode``, ``data.image_size``, uint8 ``[C, H, W]``,
scaled by 1/255 in the model unless ``data.input_scale`` says otherwise).

Only the manifest's index columns are read, never its other columns. The index pass
decodes every image once, so a missing or unreadable file fails before anything is
written; the features pass decodes them again, a chunk at a time. Neither holds the
pixels whole.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from typing import TYPE_CHECKING

import fsspec
import numpy as np

from sisa.config import DataConfig
from sisa.data.columns import _require, frame_index, index_columns
from sisa.data.dataset import DataError, first_values
from sisa.data.images import PixelReader
from sisa.data.labels import checked_labeled
from sisa.data.streaming import ContentHash, SourceIndex, chunk_rows

if TYPE_CHECKING:
    import pandas as pd

EXTENSIONS = ("csv", "parquet")


class ImageManifestSource:
    """A manifest read as a source: ``index`` reads the index columns and checks every
    image, ``chunks`` streams their pixels as uint8 [m, C, H, W] in the manifest's order."""

    def __init__(self, data: DataConfig) -> None:
        source = data.source
        ext = source.lower().rsplit(".", 1)[-1] if "." in source.rsplit("/", 1)[-1] else ""
        if ext not in EXTENSIONS:
            raise DataError(
                f"data.image_column names a column of a manifest: data.source must be a .csv "
                f"or .parquet table of image paths, not {source!r}"
            )
        for field in ("text_column", "feature_columns", "categorical_columns"):
            if getattr(data, field, None) is not None:
                raise DataError(
                    f"data.{field} does not go with data.image_column: a manifest's images "
                    "are its points' only features"
                )
        self.data, self.ext = data, ext
        self._fs, self._path = fsspec.core.url_to_fs(source)
        self._pixels = PixelReader(data.image_mode, data.image_size)
        self._index: SourceIndex | None = None
        self._images: list[tuple[object, str, str]] = []  # (ID, path as named, path read)

    def index(self) -> SourceIndex:
        if self._index is None:
            self._index = self._read_index()
        return self._index

    def _read_index(self) -> SourceIndex:
        data = self.data
        df = self._table()
        if len(df) == 0:
            raise DataError("empty data: the manifest has no rows")
        ids, y, groups, risk = frame_index(df, data, from_text=self.ext == "csv")
        ds = checked_labeled(
            ids,
            np.zeros((len(ids), 1), np.uint8),  # the images are decoded below
            y,
            num_classes=data.num_classes,
            declared=data.classes,
            groups=groups,
            risk=risk,
        )
        self._images = self._locate(df[data.image_column], ds.ids)
        content = ContentHash(f"image-manifest:{data.image_mode}:{data.image_size}")
        content.index(ds.ids, ds.y, ds.groups, ds.risk)
        for image in self._images:
            content.rows(self._read(image))
        shape = self._pixels.shape or ()
        content.header("X", np.dtype(np.uint8), (len(ds.ids), *shape))
        return SourceIndex.of(ds, feature_shape=shape, x_dtype=np.dtype(np.uint8), content=content)

    def chunks(self, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        shape = self.index().feature_shape
        rows = rows or chunk_rows(int(np.prod(shape)))
        for start in range(0, len(self._images), rows):
            yield start, np.stack([self._read(i) for i in self._images[start : start + rows]])

    def _table(self) -> pd.DataFrame:
        """The manifest's index columns and image paths (CSV IDs and groups kept as text)."""
        import pandas as pd

        data = self.data
        try:
            with self._fs.open(self._path, "rb") as f:
                if self.ext == "csv":
                    probe = pd.read_csv(f, nrows=0)
                else:
                    import pyarrow.parquet as pq

                    pf = pq.ParquetFile(f)
                    probe = pf.schema_arrow.empty_table().to_pandas()
                _require(probe, data.image_column, "image_column")  # type: ignore[arg-type]
                wanted = [*index_columns(probe, data), data.image_column]
                if self.ext == "parquet":
                    return pf.read(columns=wanted).to_pandas()
                f.seek(0)
                text = {c: str for c in (data.id_column, data.group_column, data.image_column)}
                return pd.read_csv(f, usecols=wanted, dtype=text)
        except DataError:
            raise
        except FileNotFoundError as exc:
            raise DataError(f"no such file: {data.source!r}") from exc
        except (ValueError, OSError, pd.errors.EmptyDataError) as exc:
            raise DataError(f"cannot read {data.source!r}: {exc}") from exc

    def _locate(self, col: pd.Series, ids: np.ndarray) -> list[tuple[object, str, str]]:
        """Each row's (ID, path as named, path on the filesystem), relative paths joined to
        the manifest's folder."""
        named = col.astype(object).to_numpy()  # [n]
        bad = np.array([not isinstance(v, str) or not v for v in named], dtype=bool)
        if bad.any():
            raise DataError(
                f"missing image paths (column {col.name!r}, data.image_column) at IDs "
                f"{first_values(ids[bad])}"
            )
        folder = posixpath.dirname(self._path)
        return [
            (i.item() if isinstance(i, np.generic) else i, v, posixpath.join(folder, v))
            for i, v in zip(ids, named.tolist(), strict=True)
        ]

    def _read(self, image: tuple[object, str, str]) -> np.ndarray:
        point, named, path = image
        try:
            raw = self._fs.cat_file(path)
        except FileNotFoundError:
            raise DataError(
                f"no image file {named!r} (ID {point!r}, column {self.data.image_column!r} of "
                f"{self.data.source!r}): {path!r} does not exist"
            ) from None
        except OSError as exc:
            raise DataError(f"cannot read image {path!r} (ID {point!r}): {exc}") from None
        return self._pixels.read(raw, path)
